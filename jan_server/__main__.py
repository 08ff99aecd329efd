from jan_server.cli import main

main()
