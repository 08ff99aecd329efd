/* jan-server's Swagger UI plugin (served at /docs/jan-console.js, loaded by /docs).

   - Remembers the ids the console's own responses returned and offers them in the parameters that take
     that kind of id: the most recent one filled in (where the parameter has no example of its own), the
     others a click away. Which kind of id a schema carries or a parameter takes is stated in the spec by
     `x-jan-id-kind` (on the Thread, ThreadMessage, Assistant, Model and MessageFile schemas and on the
     shared id parameters); nothing here names a parameter or an operation. In a request body, a kind's
     example id (`"file-abc123"`, the example `id` of the schema that states the kind) becomes the most
     recent id of that kind, so an example that attaches a file attaches the one just uploaded.
   - Lists operations so that clicking down the page works from an empty data dir: an operation that needs
     an id made further down (attaching an assistant to a thread) moves to the section of the operation that
     makes it, and deletes gather in a last "Clean up" section, in reverse section order.
   - Filters by the operations' own tags, ignoring case ("messages" finds the message operations, the delete
     among them).
   - Shows a stream as it arrives: when an operation whose response the spec lists as `text/event-stream`
     answers with one, "Execute" reads it itself (Swagger UI would wait for the end) and shows above the
     response the assembled result (text growing, tool calls, output items, a download's progress), the
     timings, a Stop button that closes the connection, the curl command and every event as it came. Swagger
     UI still gets the whole body at the end (or what came before Stop) and shows it as it shows any other.
*/
(function () {
  "use strict";

  var KIND = "x-jan-id-kind";
  var MAX_IDS = 10;
  var CLEAN_UP = "Clean up";
  var CLEAN_UP_DESCRIPTION = "The deletes of every section above, last, so that clicking down the page "
    + "uses what it creates before deleting it.";

  function resolve(spec, node) {
    for (var hops = 0; node && typeof node.$ref === "string" && hops < 20; hops++) {
      node = node.$ref.slice(2).split("/").reduce(function (at, key) { return at && at[key]; }, spec);
    }
    return node;
  }

  /* The [kind, id] pairs in `value`, walking it along its schema. */
  function idsIn(spec, schema, value, found, depth) {
    schema = resolve(spec, schema);
    if (!schema || value === null || value === undefined || depth > 12) return found;
    if (schema[KIND]) {
      if (typeof value === "string") found.push([schema[KIND], value]);
      else if (typeof value.id === "string") found.push([schema[KIND], value.id]);
    }
    (schema.allOf || []).forEach(function (part) { idsIn(spec, part, value, found, depth + 1); });
    if (Array.isArray(value) && schema.items) {
      value.forEach(function (item) { idsIn(spec, schema.items, item, found, depth + 1); });
    } else if (typeof value === "object" && schema.properties) {
      Object.keys(schema.properties).forEach(function (key) {
        idsIn(spec, schema.properties[key], value[key], found, depth + 1);
      });
    }
    return found;
  }

  /* {example id: kind}: the example `id` of each schema that states its kind (`file-abc123`: file). */
  function placeholders(spec) {
    var found = {};
    var schemas = (spec.components && spec.components.schemas) || {};
    Object.keys(schemas).forEach(function (name) {
      var id = schemas[name][KIND] && schemas[name].properties && schemas[name].properties.id;
      if (id && typeof id.example === "string") found[id.example] = schemas[name][KIND];
    });
    return found;
  }

  function jsonSchema(spec, response) {
    response = resolve(spec, response);
    var media = response && response.content && response.content["application/json"];
    return media && media.schema;
  }

  function parameters(spec, pathItem, operation) {
    return (pathItem.parameters || []).concat(operation.parameters || []).map(function (p) { return resolve(spec, p); });
  }

  /* Where each operation is listed: {operationId: section}, and the order of the sections. */
  function placement(spec) {
    var sections = (spec.tags || []).map(function (tag) { return tag.name; });
    var operations = [];
    Object.keys(spec.paths || {}).forEach(function (path) {
      var item = spec.paths[path];
      Object.keys(item).forEach(function (method) {
        var operation = item[method];
        if (!operation || !operation.operationId) return;
        var tag = (operation.tags || ["default"])[0];
        if (sections.indexOf(tag) < 0) sections.push(tag);
        var takes = parameters(spec, item, operation)
          .filter(function (p) { return p && p.in === "path" && p[KIND]; })
          .map(function (p) { return p[KIND]; });
        var made = null;
        Object.keys(operation.responses || {}).forEach(function (code) {
          var schema = resolve(spec, jsonSchema(spec, operation.responses[code]));
          if (code.charAt(0) === "2" && schema && schema[KIND] && takes.indexOf(schema[KIND]) < 0) made = schema[KIND];
        });
        operations.push({id: operation.operationId, method: method, tag: tag, takes: takes, makes: made});
      });
    });
    var home = {};
    operations.forEach(function (op) {
      var at = sections.indexOf(op.tag);
      if (op.makes && !(home[op.makes] <= at)) home[op.makes] = at;
    });
    var placed = {};
    operations.forEach(function (op) {
      if (op.method === "delete") { placed[op.id] = CLEAN_UP; return; }
      var at = op.takes.reduce(function (latest, kind) {
        return home[kind] > latest ? home[kind] : latest;
      }, sections.indexOf(op.tag));
      placed[op.id] = sections[at];
    });
    return {placed: placed, sections: sections};
  }

  /* The complete Server-Sent Events at the start of `buffer`, each to onEvent(name, data); returns the rest. */
  function readEvents(buffer, onEvent) {
    var blocks = buffer.split(/\r?\n\r?\n/);
    var rest = blocks.pop();
    blocks.forEach(function (block) {
      var name = "message";
      var data = [];
      block.split(/\r?\n/).forEach(function (line) {
        var colon = line.indexOf(":");
        var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (line.slice(0, colon) === "event") name = value;
        else if (line.slice(0, colon) === "data") data.push(value);
      });
      if (data.length) onEvent(name, data.join("\n"));
    });
    return rest;
  }

  function newStream(controller) {
    return {state: "streaming", controller: controller, started: performance.now(), first: null, ended: null, deltas: 0,
            events: [], choices: [], text: "", items: [], status: null, usage: null, progress: null, final: null, error: null};
  }

  function delta(live) {
    if (live.first === null) live.first = performance.now();
    live.deltas += 1;
  }

  function progress(live, model) {
    var now = performance.now();
    var was = live.progress;
    var download = (model.metadata || {}).download;
    var p = download
      ? {bytes: download.bytes_downloaded, total: download.bytes_total, percent: download.percent}
      : {bytes: was ? was.total : model.metadata && model.metadata.size, total: was ? was.total : model.metadata && model.metadata.size,
         percent: model.state === "downloaded" ? 100 : was && was.percent};
    p.state = model.state;
    p.since = was ? was.since : [now, p.bytes || 0];
    p.rate = now > p.since[0] ? (p.bytes - p.since[1]) / ((now - p.since[0]) / 1000) : null;
    live.progress = p;
  }

  /* One event of a stream into its assembled result: chat and text completion chunks, Responses' typed events, a
     download's model objects. */
  function assemble(live, name, raw) {
    var data = null;
    try { data = JSON.parse(raw); } catch (e) { /* [DONE], or not JSON: listed as it came */ }
    var type = name === "error" ? "error" : (data && (data.type || data.object)) || (raw === "[DONE]" ? "[DONE]" : name);
    live.events.push({type: type, raw: raw, brief: brief(data)});
    if (!data || typeof data !== "object") return;
    if (type === "error") { live.error = data.error || data; return; }
    if (data.usage) live.usage = data.usage;
    (data.choices || []).forEach(function (choice) {
      var into = live.choices[choice.index || 0] = live.choices[choice.index || 0] || {text: "", tools: [], finish: null};
      var change = choice.delta || {};
      var text = choice.text !== undefined ? choice.text : change.content;
      if (text) { into.text += text; delta(live); }
      (change.tool_calls || []).forEach(function (call) {
        var tool = into.tools[call.index || 0] = into.tools[call.index || 0] || {id: null, name: "", arguments: ""};
        var fn = call["function"] || call.custom || {};  // a custom tool's call streams its `input`
        var written = fn.arguments || fn.input;
        if (call.id) tool.id = call.id;
        if (fn.name) tool.name += fn.name;
        if (written) { tool.arguments += written; delta(live); }
      });
      if (choice.finish_reason) into.finish = choice.finish_reason;
    });
    if (type === "response.output_text.delta") { live.text += data.delta; delta(live); }
    if (type === "response.function_call_arguments.delta") delta(live);
    if (type === "response.output_item.added" || type === "response.output_item.done") live.items[data.output_index] = data.item;
    if (data.response) {
      live.final = data.response;
      live.status = data.response.status;
      if (data.response.usage) live.usage = data.response.usage;
      if (data.response.output && data.response.output.length) live.items = data.response.output.slice();
    }
    if (data.object === "model") { progress(live, data); live.final = data; }
  }

  /* What an event says beyond its type and the fields every event of its stream repeats. */
  function brief(data) {
    if (!data || typeof data !== "object") return "";
    if (data.object === "model") return JSON.stringify({state: data.state, download: (data.metadata || {}).download});
    var rest = {};
    Object.keys(data).forEach(function (key) {
      if (["id", "object", "created", "model", "system_fingerprint", "type", "sequence_number", "item_id"].indexOf(key) < 0) rest[key] = data[key];
    });
    return JSON.stringify(rest);
  }

  function pretty(json) {
    try { return JSON.stringify(JSON.parse(json), null, 2); } catch (e) { return json; }  // complete once it parses
  }

  function megabytes(bytes) { return (bytes / 1048576).toFixed(1) + " MB"; }

  function JanConsole(toolbox) {
    var React = toolbox.React;
    var Im = toolbox.Im;
    var cache = {source: null, spec: null, layout: null, placeholders: {}};
    var filled = {};  // "path method in name" -> the id last filled in there

    function currentSpec() {
      var source = toolbox.getSystem().specSelectors.specJson();
      if (source !== cache.source) {
        cache.source = source;
        cache.spec = source && source.toJS ? source.toJS() : {};
        cache.layout = placement(cache.spec);
        cache.placeholders = placeholders(cache.spec);
      }
      return cache.spec;
    }

    function remember(path, method, res) {
      var spec = currentSpec();
      var operation = spec.paths && spec.paths[path] && spec.paths[path][method];
      if (!operation || !res || !(res.status >= 200 && res.status < 300)) return;
      var body = res.body;
      if (typeof body === "string" || body === undefined) {
        try { body = JSON.parse(res.text); } catch (e) { return; }
      }
      var responses = operation.responses || {};
      var found = idsIn(spec, jsonSchema(spec, responses[String(res.status)] || responses["default"]), body, [], 0);
      var actions = toolbox.getSystem().janIdsActions;
      // A delete forgets its id from the kind its response states (a store's file: not the file itself), else from every kind.
      if (body && body.deleted === true && typeof body.id === "string") actions.forgetId(body.id, found.length ? found[0][0] : null);
      else if (found.length) actions.rememberIds(found.reverse());  // a list's first item ends up the most recent
    }

    /* A request body with each placeholder id (in quotes) replaced by the most recent id of its kind. */
    function withRecentIds(value) {
      if (typeof value !== "string") return value;
      currentSpec();
      var selectors = toolbox.getSystem().janIdsSelectors;
      Object.keys(cache.placeholders).forEach(function (placeholder) {
        var recent = selectors.ids(cache.placeholders[placeholder]).first();
        if (recent) value = value.split(JSON.stringify(placeholder)).join(JSON.stringify(recent));
      });
      return value;
    }

    function regroup(tagged) {
      if (!tagged || !tagged.entrySeq) return tagged;
      currentSpec();
      var layout = cache.layout;
      var order = layout.sections.concat([CLEAN_UP]);
      var details = {};
      var own = {};
      var moved = {};  // listed after the section's own operations
      tagged.forEach(function (section, name) {
        details[name] = section.get("tagDetails");
        section.get("operations").forEach(function (op) {
          var target = layout.placed[op.get("operation").get("operationId")] || name;
          var into = target === name ? own : moved;
          (into[target] = into[target] || []).push(op);
        });
      });
      var grouped = {};
      order.forEach(function (name) {
        if (own[name] || moved[name]) grouped[name] = (own[name] || []).concat(moved[name] || []);
      });
      if (grouped[CLEAN_UP]) {
        var rank = function (op) { return layout.sections.indexOf((op.getIn(["operation", "tags"]) || Im.List()).first()); };
        grouped[CLEAN_UP].sort(function (a, b) { return rank(b) - rank(a); });
        details[CLEAN_UP] = Im.fromJS({name: CLEAN_UP, description: CLEAN_UP_DESCRIPTION});
      }
      return Im.OrderedMap().withMutations(function (result) {
        order.forEach(function (name) {
          if (grouped[name]) result.set(name, Im.Map({tagDetails: details[name] || null, operations: Im.List(grouped[name])}));
        });
      });
    }

    function opsFilter(tagged, phrase) {
      var needle = String(phrase).trim().toLowerCase();
      return tagged.map(function (section) {
        return section.set("operations", section.get("operations").filter(function (op) {
          return (op.getIn(["operation", "tags"]) || Im.List()).some(function (tag) {
            return String(tag).toLowerCase().indexOf(needle) >= 0;
          });
        }));
      }).filter(function (section) { return section.get("operations").size > 0; });
    }

    var streams = {};  // "path method" -> the live record of the stream it answered last, see newStream
    var watchers = [];
    var pending = null;

    function changed() {
      if (pending === null) pending = setTimeout(function () {
        pending = null;
        watchers.forEach(function (watch) { watch(); });
      }, 30);
    }

    function canStream(path, method) {
      var spec = currentSpec();
      var operation = spec.paths && spec.paths[path] && spec.paths[path][method];
      var ok = operation && resolve(spec, (operation.responses || {})["200"]);
      return Boolean(ok && ok.content && ok.content["text/event-stream"]);
    }

    /* fetch for swagger-client: an event stream is read here as it arrives and handed on whole at its end. */
    function streamingFetch(path, method, url, init) {
      var controller = new AbortController();
      return fetch(url, Object.assign({}, init, {signal: controller.signal})).then(function (res) {
        if (!/^text\/event-stream/i.test(res.headers.get("content-type") || "") || !res.body) return res;
        var live = streams[path + " " + method] = newStream(controller);
        var reader = res.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        changed();
        var copy = new ReadableStream({start: function (sink) {
          function end(state) {
            live.state = live.stopped ? "stopped" : state;
            live.ended = performance.now();
            sink.close();
            if (live.final) remember(path, method, {status: res.status, body: live.final});
            changed();
          }
          function pump() {
            return reader.read().then(function (part) {
              if (part.done) return end("done");
              sink.enqueue(part.value);
              buffer = readEvents(buffer + decoder.decode(part.value, {stream: true}), function (name, data) { assemble(live, name, data); });
              changed();
              return pump();
            }, function (error) {
              if (!live.stopped) live.error = {message: "The connection failed: " + error};
              end("error");
            });
          }
          pump();
        }});
        return new Response(copy, {status: res.status, statusText: res.statusText, headers: res.headers});
      });
    }

    class JanStream extends React.Component {
      componentDidMount() {
        var self = this;
        this.watch = function () { self.forceUpdate(); };
        watchers.push(this.watch);
      }

      componentWillUnmount() { watchers.splice(watchers.indexOf(this.watch), 1); }

      componentDidUpdate() { if (this.list) this.list.scrollTop = this.list.scrollHeight; }

      render() {
        var self = this;
        var h = React.createElement;
        var path = this.props.path;
        var method = this.props.method;
        var live = streams[path + " " + method];
        if (!live) return null;
        var system = toolbox.getSystem();
        var figure = function (label, value) {
          return value === null || value === undefined ? null : h("span", {className: "jan-stream__figure"}, label + " ", h("b", null, value));
        };
        var tool = function (call, i) {
          return h("div", {key: "tool" + i, className: "jan-stream__tool"},
            "Tool call ", h("b", {className: "jan-stream__tool-name"}, call.name), call.id ? " " + call.id : "",
            h("pre", {className: "jan-stream__args"}, pretty(call.arguments)));
        };
        var item = function (it, i) {
          if (!it) return null;
          var text = it.type === "message" ? (it.content || []).map(function (part) { return part.text || ""; }).join("")
            : it.type === "function_call" ? it.name + " " + pretty(it.arguments) : "";
          return h("li", {key: i, className: "jan-stream__item"}, h("code", null, it.type), " " + (it.id || "") + (it.status ? " · " + it.status : ""),
            text ? h("pre", null, text) : null);
        };
        var result = live.choices.map(function (choice, i) {
          return h("div", {key: "choice" + i, className: "jan-stream__choice"},
            live.choices.length > 1 ? h("div", {className: "jan-stream__label"}, "Choice " + i) : null,
            choice.text ? h("pre", {className: "jan-stream__text"}, choice.text) : null,
            choice.tools.map(tool),
            figure("Finish reason", choice.finish));
        });
        if (live.text || live.items.length) {
          result.push(h("div", {key: "response", className: "jan-stream__choice"},
            h("pre", {className: "jan-stream__text"}, live.text),
            h("ol", {className: "jan-stream__items"}, live.items.map(item)),
            figure("Status", live.status)));
        }
        var p = live.progress;
        if (p) {
          result.push(h("div", {key: "progress", className: "jan-stream__progress"},
            h("progress", {max: 100, value: p.percent || 0}),
            h("span", {className: "jan-stream__progress-text"}, [
              p.bytes !== undefined ? megabytes(p.bytes) + (p.total ? " of " + megabytes(p.total) : "") : null,
              typeof p.percent === "number" ? p.percent.toFixed(1) + " %" : null,
              p.rate !== null ? megabytes(p.rate) + "/s" : null,
              p.state,
            ].filter(Boolean).join(" · "))));
        }
        if (live.error) result.push(h("pre", {key: "error", className: "jan-stream__error"}, JSON.stringify(live.error, null, 2)));
        var end = live.ended || performance.now();
        var tokens = (live.usage && (live.usage.completion_tokens || live.usage.output_tokens)) || live.deltas;
        var generated = !p && live.first !== null;
        var request = system.specSelectors.mutatedRequestFor(path, method) || system.specSelectors.requestFor(path, method);
        var Snippets = system.getComponent("RequestSnippets", true);
        return h("div", {className: "jan-stream", "data-state": live.state},
          h("div", {className: "jan-stream__head"},
            h("b", null, "Stream "), h("span", {className: "jan-stream__state"}, live.state),
            live.state === "streaming" ? h("button", {type: "button", className: "btn jan-stream__stop", onClick: function () {
              live.stopped = true;
              live.controller.abort();
            }}, "Stop") : null),
          h("div", {className: "jan-stream__result"}, result),
          h("div", {className: "jan-stream__timings"},
            figure("Time to first token", generated ? Math.round(live.first - live.started) + " ms" : null),
            figure("Tokens/s", generated && end > live.first ? (tokens / ((end - live.first) / 1000)).toFixed(1) : null),
            figure(live.ended ? "Total" : "Elapsed", Math.round(end - live.started) + " ms"),
            figure("Usage", live.usage ? JSON.stringify(live.usage) : null)),
          request && Snippets && !system.specSelectors.responseFor(path, method) ? h(Snippets, {request: request}) : null,
          h("ol", {className: "jan-stream__events", ref: function (el) { self.list = el; }}, live.events.map(function (event, i) {
            return h("li", {key: i, title: event.raw}, h("span", {className: "jan-stream__type"}, event.type), " " + event.brief);
          })));
      }
    }

    class JanIdChoices extends React.Component {
      value() {
        var system = toolbox.getSystem();
        var meta = system.specSelectors.parameterWithMetaByIdentity(this.props.pathMethod, this.props.rawParam);
        return meta ? meta.get("value") : undefined;
      }

      ids() {
        return toolbox.getSystem().janIdsSelectors.ids(this.props.kind);
      }

      /* Fill in the most recent id, unless the parameter has an example or a value the user gave it. */
      prefill() {
        var raw = this.props.rawParam;
        var recent = this.ids().first();
        if (!recent || raw.get("example") !== undefined || raw.getIn(["schema", "example"]) !== undefined || raw.get("examples")) return;
        var key = this.props.pathMethod.concat([raw.get("in"), raw.get("name")]).join(" ");
        var value = this.value();
        var empty = value === undefined || value === null || value === "";
        if (value === recent || (empty ? filled[key] === recent : value !== filled[key])) return;  // cleared or typed by hand
        filled[key] = recent;
        this.props.onChange(raw, recent, false);
      }

      componentDidMount() { this.prefill(); }

      componentDidUpdate() { this.prefill(); }

      render() {
        var self = this;
        var ids = this.ids();
        if (!ids.size) return null;
        var value = this.value();
        return React.createElement("tr", {className: "jan-ids"},
          React.createElement("td", null),
          React.createElement("td", null,
            React.createElement("span", {className: "jan-ids__label"}, "Recent " + this.props.kind + " ids: "),
            ids.map(function (id) {
              return React.createElement("button", {
                key: id, type: "button", title: "Use " + id,
                className: "jan-ids__id" + (id === value ? " jan-ids__id--current" : ""),
                onClick: function () { self.props.onChange(self.props.rawParam, id, false); },
              }, id);
            }).toArray()));
      }
    }

    return {
      fn: {opsFilter: opsFilter},
      components: {JanIdChoices: JanIdChoices, JanStream: JanStream},
      wrapComponents: {
        parameterRow: function (Original, system) {
          return function (props) {
            var kind = props.rawParam && props.rawParam.get(KIND);
            if (!kind) return React.createElement(Original, props);
            var Choices = system.getComponent("JanIdChoices", true);
            return React.createElement(React.Fragment, null,
              React.createElement(Original, props),
              React.createElement(Choices, {kind: kind, rawParam: props.rawParam, pathMethod: props.pathMethod, onChange: props.onChange}));
          };
        },
        responses: function (Original, system) {
          return function (props) {
            return React.createElement(React.Fragment, null,
              React.createElement(system.getComponent("JanStream", true), {path: props.path, method: props.method}),
              React.createElement(Original, props));
          };
        },
      },
      statePlugins: {
        spec: {
          wrapActions: {
            executeRequest: function (original) {
              return function (req) {
                if (streams[req.pathName + " " + req.method]) { delete streams[req.pathName + " " + req.method]; changed(); }
                if (!canStream(req.pathName, req.method)) return original(req);
                return original(Object.assign({}, req, {userFetch: function (url, init) {
                  return streamingFetch(req.pathName, req.method, url, init);
                }}));
              };
            },
            setResponse: function (original) {
              return function (path, method, res) {
                try { remember(path, method, res); } catch (e) { console.warn("jan-console: ids not read", e); }
                return original(path, method, res);
              };
            },
          },
          wrapSelectors: {
            taggedOperations: function (original) {
              return function () { return regroup(original.apply(null, arguments)); };
            },
          },
        },
        oas3: {
          wrapActions: {
            setRequestBodyValue: function (original) {
              return function (payload) {
                return original(Object.assign({}, payload, {value: withRecentIds(payload && payload.value)}));
              };
            },
          },
        },
        janIds: {
          actions: {
            rememberIds: function (pairs) { return {type: "jan_ids_remember", payload: pairs}; },
            forgetId: function (id, kind) { return {type: "jan_ids_forget", payload: {id: id, kind: kind}}; },
          },
          reducers: {
            jan_ids_remember: function (state, action) {
              return action.payload.reduce(function (at, pair) {  // most recent first, each id once
                var ids = (at.get(pair[0]) || Im.List()).filter(function (id) { return id !== pair[1]; });
                return at.set(pair[0], ids.unshift(pair[1]).take(MAX_IDS));
              }, state || Im.Map());
            },
            jan_ids_forget: function (state, action) {
              return (state || Im.Map()).map(function (ids, kind) {
                if (action.payload.kind && kind !== action.payload.kind) return ids;
                return ids.filter(function (id) { return id !== action.payload.id; });
              });
            },
          },
          selectors: {
            ids: function (state, kind) { return (state && state.get(kind)) || Im.List(); },
          },
        },
      },
    };
  }

  window.JanConsole = JanConsole;
})();
