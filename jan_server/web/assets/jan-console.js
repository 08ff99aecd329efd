/* jan-server's Swagger UI plugin (served at /docs/jan-console.js, loaded by /docs).

   - Remembers the ids the console's own responses returned and offers them in the parameters that take
     that kind of id: the most recent one filled in (where the parameter has no example of its own), the
     others a click away. Which kind of id a schema carries or a parameter takes is stated in the spec by
     `x-jan-id-kind` (on the Thread, ThreadMessage, Assistant, Model and MessageFile schemas and on the
     shared id parameters); nothing here names a parameter or an operation.
   - Lists operations so that clicking down the page works from an empty data dir: an operation that needs
     an id made further down (attaching an assistant to a thread) moves to the section of the operation that
     makes it, and deletes gather in a last "Clean up" section, in reverse section order.
   - Filters by the operations' own tags, ignoring case ("messages" finds the message operations, the delete
     among them).
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

  function JanConsole(toolbox) {
    var React = toolbox.React;
    var Im = toolbox.Im;
    var cache = {source: null, spec: null, layout: null};
    var filled = {};  // "path method in name" -> the id last filled in there

    function currentSpec() {
      var source = toolbox.getSystem().specSelectors.specJson();
      if (source !== cache.source) {
        cache.source = source;
        cache.spec = source && source.toJS ? source.toJS() : {};
        cache.layout = placement(cache.spec);
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
      if (body && body.deleted === true && typeof body.id === "string") actions.forgetId(body.id);
      else if (found.length) actions.rememberIds(found.reverse());  // a list's first item ends up the most recent
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
      components: {JanIdChoices: JanIdChoices},
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
      },
      statePlugins: {
        spec: {
          wrapActions: {
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
        janIds: {
          actions: {
            rememberIds: function (pairs) { return {type: "jan_ids_remember", payload: pairs}; },
            forgetId: function (id) { return {type: "jan_ids_forget", payload: id}; },
          },
          reducers: {
            jan_ids_remember: function (state, action) {
              return action.payload.reduce(function (at, pair) {  // most recent first, each id once
                var ids = (at.get(pair[0]) || Im.List()).filter(function (id) { return id !== pair[1]; });
                return at.set(pair[0], ids.unshift(pair[1]).take(MAX_IDS));
              }, state || Im.Map());
            },
            jan_ids_forget: function (state, action) {
              return (state || Im.Map()).map(function (ids) { return ids.filter(function (id) { return id !== action.payload; }); });
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
