"""A custom (freeform) tool's input format as a llama.cpp grammar: OpenAI's `{"type": "grammar", "syntax": "lark" |
"regex", "definition"}`, or unconstrained text. `gbnf(format, prefix)` gives the rules (named under `prefix`, so
several tools share one grammar) and the name of the rule the input must match.

Lark grammars are read with the `lark` package and translated rule by rule (alternatives, groups, `?` `*` `+`
`~ n..m`, `[...]`, string literals, `"a".."z"` ranges, regular expressions, aliases, `%import`ed terminals);
`%ignore`, templates, case-insensitive literals and left recursion (which llama.cpp's grammar cannot run) are
refused. Regular expressions (a regex format, or a Lark terminal's) are read with Python's own parser and
translated: literals, classes, `.`, `\\d \\w \\s`, groups, alternation and repeats; anchors only at the ends;
lookarounds, back-references and repeat bounds over 256 are refused. A grammar that cannot be translated is an UnsupportedGrammar whose
message names what stopped it."""

from __future__ import annotations

import re
from re import _constants as sre, _parser as sre_parse  # Python's own regex parser: the regex as a tree

from jan_server.models.grammar import MAX_REPEAT

#: An unconstrained input: any text (the call block's end closes it).
ANY_TEXT = "[^\\x00]*"
CATEGORIES = {sre.CATEGORY_DIGIT: "0-9", sre.CATEGORY_WORD: "a-zA-Z0-9_", sre.CATEGORY_SPACE: " \\t\\n\\r\\x0B\\x0C"}
NOT_CATEGORIES = {sre.CATEGORY_NOT_DIGIT: "0-9", sre.CATEGORY_NOT_WORD: "a-zA-Z0-9_", sre.CATEGORY_NOT_SPACE: " \\t\\n\\r\\x0B\\x0C"}


class UnsupportedGrammar(ValueError):
    pass


def gbnf(format: dict | None, prefix: str) -> tuple[str, str]:
    """(rules, root rule name) for a custom tool's `format`."""
    from lark.exceptions import LarkError

    if not format or format.get("type", "text") == "text":
        return f"{prefix} ::= {ANY_TEXT}\n", prefix
    syntax, definition = format.get("syntax"), format.get("definition") or ""
    try:
        if syntax == "regex":
            return f"{prefix} ::= {regex(definition)}\n", prefix
        if syntax == "lark":
            return lark(definition, prefix), f"{prefix}-start"
    except RecursionError:
        raise UnsupportedGrammar("the grammar is nested too deeply") from None
    except LarkError as exc:
        raise UnsupportedGrammar(f"the Lark grammar does not load: {str(exc).strip().splitlines()[0]}") from None
    raise UnsupportedGrammar(f"unknown grammar syntax {syntax!r} (lark or regex)")


def regex(pattern: str, flags: int = 0) -> str:
    """A GBNF expression matching what `pattern` matches in full."""
    try:
        tree = sre_parse.parse(pattern, flags)
    except re.error as exc:
        raise UnsupportedGrammar(f"the regex {pattern!r} does not parse: {exc}") from None
    if tree.state.flags & re.IGNORECASE:
        raise UnsupportedGrammar(f"the case-insensitive regex {pattern!r} cannot be translated")
    items = list(tree)
    while items and items[0] == (sre.AT, sre.AT_BEGINNING) or items and items[0] == (sre.AT, sre.AT_BEGINNING_STRING):
        items.pop(0)
    while items and items[-1][0] is sre.AT and items[-1][1] in (sre.AT_END, sre.AT_END_STRING):
        items.pop()
    return _sequence(items, bool(tree.state.flags & re.DOTALL)) or '""'


def _sequence(items, dotall: bool) -> str:
    return " ".join(_node(op, value, dotall) for op, value in items)


def _node(op, value, dotall: bool) -> str:
    if op is sre.LITERAL:
        return literal(chr(value))
    if op is sre.NOT_LITERAL:
        return f"[^{_class_char(value)}]"
    if op is sre.ANY:
        return "[^\\x00]" if dotall else "[^\\n]"
    if op is sre.IN:
        return _char_class(value)
    if op is sre.CATEGORY:
        return _char_class([(sre.CATEGORY, value)])
    if op is sre.BRANCH:
        return "(" + " | ".join(_sequence(branch, dotall) or '""' for branch in value[1]) + ")"
    if op is sre.SUBPATTERN and value[1] & re.IGNORECASE:
        raise UnsupportedGrammar("a case-insensitive regex group cannot be translated")
    if op is sre.SUBPATTERN:
        return f"({_sequence(value[3], dotall) or chr(34) * 2})"
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        low, high, item = value
        return f"({_sequence(item, dotall)}){_repeat(low, None if high == sre.MAXREPEAT else high)}"
    raise UnsupportedGrammar(f"the regex construct {str(op).lower()} (lookarounds, back-references, anchors inside) cannot be translated")


def _repeat(low: int, high: int | None) -> str:
    """A repeat's GBNF suffix; llama.cpp writes a bound as that many copies of the item, so bounds over MAX_REPEAT
    are refused."""
    if max(low, high or 0) > MAX_REPEAT:
        raise UnsupportedGrammar(f"the repeat bound {max(low, high or 0)} is over {MAX_REPEAT}")
    return {(0, 1): "?", (0, None): "*", (1, None): "+"}.get((low, high)) or (f"{{{low},}}" if high is None else f"{{{low},{high}}}")


def _char_class(items) -> str:
    negate = bool(items) and items[0][0] is sre.NEGATE
    parts = []
    for op, value in items[1:] if negate else items:
        if op is sre.LITERAL:
            parts.append(_class_char(value))
        elif op is sre.RANGE:
            parts.append(f"{_class_char(value[0])}-{_class_char(value[1])}")
        elif op is sre.CATEGORY and value in CATEGORIES:
            parts.append(CATEGORIES[value])
        elif op is sre.CATEGORY and value in NOT_CATEGORIES and len(items) == 1:
            return f"[^{NOT_CATEGORIES[value]}]"
        else:
            raise UnsupportedGrammar(f"the regex class item {str(op).lower()} {value} cannot be translated")
    return f"[{'^' if negate else ''}{''.join(parts)}]"


def _class_char(code: int) -> str:
    char = chr(code)
    return char if char.isalnum() and code < 128 else _escape(code)


def _escape(code: int) -> str:
    return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def literal(text: str) -> str:
    """A GBNF string literal."""
    return '"' + "".join(char if " " <= char <= "~" and char not in '"\\' else _escape(ord(char)) for char in text) + '"'


def lark(definition: str, prefix: str) -> str:
    """GBNF rules for a Lark grammar, each named `prefix-<name>`; its start rule is `start`."""
    from lark.load_grammar import GrammarBuilder

    builder = GrammarBuilder()
    builder.load_grammar(definition)  # a LarkError if it does not
    grammar = builder.build()
    if grammar.ignore:
        raise UnsupportedGrammar(f"the Lark grammar's %ignore {', '.join(grammar.ignore)} cannot be translated")
    names = {name for name, *_ in grammar.rule_defs} | {name for name, _ in grammar.term_defs}
    if "start" not in names:
        raise UnsupportedGrammar("the Lark grammar has no start rule")
    translator = _Lark(prefix)
    rules = [(name, tree) for name, params, tree, _ in grammar.rule_defs if not params or _refuse(f"the template {name}")]
    rules += [(name, tree) for name, (tree, _) in grammar.term_defs]
    _check_left_recursion(dict(rules))
    return "".join(f"{translator.name(name)} ::= {translator.expression(tree)}\n" for name, tree in rules)


def _refuse(what: str):
    raise UnsupportedGrammar(f"{what} cannot be translated")


class _Lark:
    """Lark's grammar trees (lark.load_grammar's) as GBNF expressions."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def name(self, symbol: str) -> str:
        return f"{self.prefix}-{symbol.replace('_', '-')}"

    def expression(self, node) -> str:
        from lark import Token, Tree
        from lark.grammar import Symbol
        from lark.load_grammar import _literal_to_pattern

        if isinstance(node, Symbol):
            return self.name(node.name)
        if not isinstance(node, Tree):
            raise UnsupportedGrammar(f"the Lark item {node!r} cannot be translated")
        kind, children = node.data, node.children
        if kind == "expansions":
            return "(" + " | ".join(self.expression(child) for child in children) + ")" if len(children) > 1 else self.expression(children[0])
        if kind == "expansion":
            return " ".join(self.expression(child) for child in children) or '""'
        if kind in ("value", "alias"):
            return self.expression(children[0])
        if kind == "maybe":
            return f"({self.expression(children[0])})?"
        if kind == "expr":
            inner = f"({self.expression(children[0])})"
            op = children[1]
            if isinstance(op, Token) and op.type == "OP":
                return inner + op.value
            low, high = (int(child) for child in children[2:4]) if len(children) >= 4 else (int(children[2]),) * 2
            return inner + _repeat(low, high)
        if kind == "literal":
            pattern = _literal_to_pattern(children[0])
            if pattern.type == "re":
                return f"({regex(pattern.value, _flags(pattern.flags))})"
            if pattern.flags:
                raise UnsupportedGrammar(f"the flagged Lark literal {children[0]} cannot be translated")
            return literal(pattern.value)
        if kind == "range":
            low, high = (_literal_to_pattern(child).value for child in children)
            if len(low) != 1 or len(high) != 1:
                raise UnsupportedGrammar(f"the Lark range {children[0]}..{children[1]} is not between single characters")
            return f"[{_class_char(ord(low))}-{_class_char(ord(high))}]"
        raise UnsupportedGrammar(f"the Lark construct {kind} cannot be translated")


def _flags(flags) -> int:
    return sum(getattr(re, flag.upper()) for flag in flags)


def _check_left_recursion(rules: dict) -> None:
    """A rule that can start with itself (llama.cpp's grammar would loop) is refused, naming it."""
    from lark import Tree
    from lark.grammar import Symbol

    def nullable(node, seen=frozenset()) -> bool:
        if isinstance(node, Symbol):
            return node.name not in seen and node.name in rules and nullable(rules[node.name], seen | {node.name})
        if node.data == "expansions":
            return any(nullable(child, seen) for child in node.children)
        if node.data == "expansion":
            return all(nullable(child, seen) for child in node.children)
        if node.data == "maybe" or node.data == "expr" and (str(node.children[1]) in ("?", "*") or str(node.children[2:3][0] if node.children[2:] else "") == "0"):
            return True
        if node.data in ("value", "alias", "expr"):
            return isinstance(node.children[0], (Symbol, Tree)) and nullable(node.children[0], seen)
        return False

    def firsts(node) -> set[str]:
        if isinstance(node, Symbol):
            return {node.name}
        if not isinstance(node, Tree):
            return set()
        if node.data == "expansion":
            out = set()
            for child in node.children:
                out |= firsts(child)
                if not nullable(child):
                    break
            return out
        children = node.children if node.data == "expansions" else node.children[:1]
        return set().union(*(firsts(child) for child in children))

    edges = {name: firsts(tree) for name, tree in rules.items()}
    for start in rules:
        stack, seen = list(edges[start]), set()
        while stack:
            name = stack.pop()
            if name == start:
                raise UnsupportedGrammar(f"the Lark rule {start} is left-recursive, which llama.cpp's grammar cannot run")
            if name not in seen and name in edges:
                seen.add(name)
                stack.extend(edges[name])
