/* fluxprm view: the trace list and trace pages, rendered from the JSON embedded in this file.
 *
 * The index (the JSON script tag "fluxprm-index") is parsed once; a trace's details (tag "fluxprm-d-N") are
 * parsed only when it is opened, so a page of thousands of long traces opens as fast as its list.
 * Text is always inserted with textContent, never as HTML. No network: everything is in this file. */
(function () {
  "use strict";

  var INDEX = JSON.parse(document.getElementById("fluxprm-index").textContent);
  var ROWS = INDEX.rows;
  var POS = {};  // trace position -> index in ROWS
  ROWS.forEach(function (r, k) { POS[r.i] = k; });
  var app = document.getElementById("app");
  var state = {q: "", correct: "all", model: "", sort: "input", desc: false, page: 0,
               scale: "abs", listScroll: 0};
  var shown = ROWS.slice();  // the filtered and sorted rows
  var firstRenderDone = false;

  // ------------------------------------------------------------------ colour scale
  // ColorBrewer RdYlBu (7 classes): diverging and safe for the common colour-vision deficiencies,
  // unlike red-green. Low rewards are red, the middle pale yellow, high rewards blue.
  var STOPS = [[215, 48, 39], [252, 141, 89], [254, 224, 144], [255, 255, 191], [224, 243, 248],
               [145, 191, 219], [69, 117, 180]];

  function bounds() {
    if (state.scale === "page" && INDEX.range) return INDEX.range;
    return [0, 1];
  }
  function position(v) {
    var b = bounds();
    var t = (v - b[0]) / (b[1] - b[0]);
    return t < 0 ? 0 : t > 1 ? 1 : t;
  }
  function colourAt(t) {
    var x = t * (STOPS.length - 1), k = Math.min(Math.floor(x), STOPS.length - 2), f = x - k;
    var a = STOPS[k], b = STOPS[k + 1];
    return [0, 1, 2].map(function (j) { return Math.round(a[j] + (b[j] - a[j]) * f); });
  }
  function colour(v) { return v === null || v === undefined ? null : colourAt(position(v)); }
  function css(c) { return c ? "rgb(" + c.join(",") + ")" : "#d9d9d9"; }
  function tint(c, keep) {  // mix with white: light backgrounds keep dark text readable
    if (!c) return "#f2f2f2";
    return "rgb(" + c.map(function (x) { return Math.round(255 - (255 - x) * keep); }).join(",") + ")";
  }
  function inkOn(c) {  // black or white, whichever contrasts more with c (WCAG relative luminance)
    if (!c) return "#000";
    var l = c.map(function (x) { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    var lum = 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
    return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? "#000" : "#fff";
  }

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function fmt(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d === undefined ? 3 : d); }
  function num(n) { return Number(n).toLocaleString("en-US"); }
  function textOf(v) {  // a text, or [head, characters left out, tail] after the page-size guard
    if (typeof v === "string") return [document.createTextNode(v)];
    return [document.createTextNode(v[0]),
            el("span", {class: "cut", title: "left out by the page-size guard (--max-bytes): the head and tail of the step are kept",
                        text: " ⋯ " + num(v[1]) + " characters left out ⋯ "}),
            document.createTextNode(v[2])];
  }
  function outcome(c) {
    if (c === true) return el("span", {class: "ok", title: "correct", text: "✓ correct"});
    if (c === false) return el("span", {class: "bad", title: "incorrect", text: "✗ incorrect"});
    return el("span", {class: "unknown", title: "correctness unknown", text: "–"});
  }
  function modelOf(r) { return r.model || r.prm || ""; }

  // ------------------------------------------------------------------ list: filter, sort, page
  function searchText(r) {
    if (r._s === undefined) r._s = (r.id + " " + modelOf(r) + " " + r.src + " " + (r.p || "")).toLowerCase();
    return r._s;
  }
  function minReward(r) {
    var m = Infinity;
    for (var k = 0; k < r.r.length; k++) if (r.r[k] !== null && r.r[k] < m) m = r.r[k];
    return m === Infinity ? null : m;
  }
  var SORTS = {
    input: function (a, b) { return a.i - b.i; },
    score: function (a, b) { return nullsLast(a.score, b.score); },
    id: function (a, b) { return String(a.id).localeCompare(String(b.id), undefined, {numeric: true}) || a.i - b.i; },
    steps: function (a, b) { return a.n - b.n || a.i - b.i; },
    minstep: function (a, b) { return nullsLast(minReward(a), minReward(b)); }
  };
  function nullsLast(x, y) {
    if (x === null && y === null) return 0;
    if (x === null) return state.desc ? -1 : 1;
    if (y === null) return state.desc ? 1 : -1;
    return x - y;
  }
  function refilter() {
    var q = state.q.trim().toLowerCase();
    shown = ROWS.filter(function (r) {
      if (state.correct === "correct" && r.correct !== true) return false;
      if (state.correct === "incorrect" && r.correct !== false) return false;
      if (state.correct === "unknown" && (r.correct === true || r.correct === false)) return false;
      if (state.model && modelOf(r) !== state.model) return false;
      return !q || searchText(r).indexOf(q) >= 0;
    });
    var cmp = SORTS[state.sort];
    shown.sort(function (a, b) { return state.desc ? -cmp(a, b) : cmp(a, b); });
    var pages = Math.max(1, Math.ceil(shown.length / INDEX.pageSize));
    if (state.page >= pages) state.page = pages - 1;
  }

  function notesBox() {
    if (!INDEX.notes.length) return null;
    return el("section", {class: "notes", id: "notes"}, INDEX.notes.map(function (n) {
      var body = n.examples.length ? el("ul", null, n.examples.map(function (x) { return el("li", {text: x}); })
                                     .concat(n.count > n.examples.length ? [el("li", {class: "more", text: "… and " + num(n.count - n.examples.length) + " more"})] : []))
                                   : null;
      var text = (n.level === "warning" ? "⚠ " : "ℹ ") + n.text;
      if (!body) return el("div", {class: "note " + n.level, text: text});
      return el("details", {class: "note " + n.level}, [el("summary", {text: text + " (" + num(n.count) + ")"}), body]);
    }));
  }

  function legend() {
    var b = bounds(), ticks = [];
    for (var k = 0; k <= 4; k++) ticks.push(el("span", {text: fmt(b[0] + (b[1] - b[0]) * k / 4, 2)}));
    var stops = [];
    for (var s = 0; s <= 10; s++) stops.push(css(colourAt(s / 10)) + " " + s * 10 + "%");
    var select = el("select", {id: "scale", "aria-label": "colour scale", onchange: function (e) {
      state.scale = e.target.value; route();
    }}, [el("option", {value: "abs", text: "0 – 1"}),
         INDEX.range ? el("option", {value: "page", text: "page range (5th–95th pct)"}) : null]);
    select.value = state.scale;
    return el("div", {class: "legend", id: "legend"}, [
      el("span", {class: "legend-label", text: "step reward"}),
      el("div", {class: "legend-scale"}, [
        el("div", {class: "legend-bar", style: "background: linear-gradient(to right, " + stops.join(", ") + ")"}),
        el("div", {class: "legend-ticks"}, ticks)]),
      el("span", {class: "legend-ends", text: "low (red) → high (blue)"}),
      el("label", {class: "legend-mode"}, ["scale ", select])]);
  }

  function strip(r) {  // a row's step rewards as a strip of colours: thinking | response
    var nt = r.nt, parts = [r.r.slice(0, nt), r.r.slice(nt)], dropped = r.truncated ? r.dropped || 0 : 0;
    var title = r.r.length + " step rewards (" + nt + " thinking, " + (r.r.length - nt) + " response)" +
                (dropped ? "; " + dropped + " earliest thinking steps dropped (grey)" : "");
    return el("div", {class: "strip", title: title},
      [dropped ? el("div", {class: "strip-part dropped-ov", style: "flex-grow:" + dropped}) : null].concat(parts.map(function (xs, k) {
        if (!xs.length) return null;
        var stops = [];
        xs.forEach(function (x, j) {
          var c = css(colour(x));
          stops.push(c + " " + (100 * j / xs.length).toFixed(2) + "%", c + " " + (100 * (j + 1) / xs.length).toFixed(2) + "%");
        });
        return el("div", {class: k ? "strip-part response" : "strip-part thinking",
                          style: "flex-grow:" + xs.length + ";background:linear-gradient(to right," + stops.join(",") + ")"});
      })));
  }

  function flags(r) {
    var out = [];
    if (r.truncated) out.push(el("span", {class: "flag", title: "earliest thinking steps dropped to fit the context",
                                          text: r.dropped ? "dropped " + r.dropped : "truncated"}));
    if (r.windows) out.push(el("span", {class: "flag", title: "scored in " + r.windows + " context windows", text: r.windows + " windows"}));
    if (r.clipped) out.push(el("span", {class: "flag", title: "clipped: " + r.clipped.join(", "), text: "clipped"}));
    if (r.labelled) out.push(el("span", {class: "flag teacher", title: "teacher rewards from the labels file", text: "labels"}));
    if (r.text === "unsegmented") out.push(el("span", {class: "flag warn", title: "text does not split into the scored steps", text: "unsegmented"}));
    if (r.text === "none") out.push(el("span", {class: "flag", title: "no text (scores only)", text: "no text"}));
    if (r.text === "left_out") out.push(el("span", {class: "flag warn", title: "text left out by the page-size guard", text: "text left out"}));
    if (r.short) out.push(el("span", {class: "flag", title: num(r.short) + " characters left out by the page-size guard", text: "shortened"}));
    return out;
  }

  function renderList() {
    document.title = INDEX.title;
    var size = INDEX.pageSize, pages = Math.max(1, Math.ceil(shown.length / size));
    var from = state.page * size, to = Math.min(shown.length, from + size);
    var models = {};
    ROWS.forEach(function (r) { var m = modelOf(r); if (m) models[m] = (models[m] || 0) + 1; });
    var modelSelect = el("select", {id: "f-model", "aria-label": "model", onchange: function (e) { state.model = e.target.value; state.page = 0; refilter(); renderList(); }},
      [el("option", {value: "", text: "all models"})].concat(Object.keys(models).sort().map(function (m) {
        return el("option", {value: m, text: m + " (" + models[m] + ")"});
      })));
    modelSelect.value = state.model;
    var correctSelect = el("select", {id: "f-correct", "aria-label": "correctness", onchange: function (e) { state.correct = e.target.value; state.page = 0; refilter(); renderList(); }},
      [["all", "correct and incorrect"], ["correct", "correct only"], ["incorrect", "incorrect only"], ["unknown", "correctness unknown"]].map(function (o) {
        return el("option", {value: o[0], text: o[1]});
      }));
    correctSelect.value = state.correct;
    var sortSelect = el("select", {id: "f-sort", "aria-label": "sort by", onchange: function (e) { state.sort = e.target.value; refilter(); renderList(); }},
      [["input", "input order"], ["score", "score"], ["id", "id"], ["steps", "steps"], ["minstep", "lowest step reward"]].map(function (o) {
        return el("option", {value: o[0], text: "sort: " + o[1]});
      }));
    sortSelect.value = state.sort;
    var search = el("input", {id: "f-search", type: "search", placeholder: "search id, model, problem…", value: state.q,
                              "aria-label": "search"});
    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = search.value; state.page = 0; refilter(); renderTable(); }, 150);
    });
    var controls = el("div", {class: "controls"}, [search, correctSelect, modelSelect, sortSelect,
      el("button", {id: "f-dir", title: "reverse the order", onclick: function () { state.desc = !state.desc; refilter(); renderList(); },
                    text: state.desc ? "↓ descending" : "↑ ascending"})]);
    var tableBox = el("div", {id: "table-box"});
    app.replaceChildren(notesBox() || "", legend(), controls, tableBox);
    renderTable();

    function renderTable() {
      pages = Math.max(1, Math.ceil(shown.length / size));
      from = state.page * size; to = Math.min(shown.length, from + size);
      var body = el("tbody");
      for (var k = from; k < to; k++) body.appendChild(rowView(shown[k]));
      var pager = el("nav", {class: "pager"}, [
        el("button", {id: "prev-page", disabled: state.page === 0, onclick: function () { state.page--; renderTable(); window.scrollTo(0, 0); }, text: "‹ previous"}),
        el("span", {id: "page-info", text: shown.length ? "traces " + num(from + 1) + "–" + num(to) + " of " + num(shown.length) +
                    (shown.length < ROWS.length ? " (filtered from " + num(ROWS.length) + ")" : "") + " · page " + (state.page + 1) + " of " + pages
                    : "no trace matches"}),
        el("button", {id: "next-page", disabled: state.page >= pages - 1, onclick: function () { state.page++; renderTable(); window.scrollTo(0, 0); }, text: "next ›"})]);
      var head = el("thead", null, [el("tr", null, ["#", "id", "score", "outcome", "model", "steps", "step rewards (thinking | response)", ""].map(function (h) {
        return el("th", {text: h});
      }))]);
      tableBox.replaceChildren(el("table", {class: "traces", id: "trace-table"}, [head, body]), pager);
    }
  }

  function rowView(r) {
    var open = function () { state.listScroll = window.scrollY; location.hash = "#t" + r.i; };
    return el("tr", {class: "trace-row", "data-pos": r.i, tabindex: 0, onclick: open,
                     onkeydown: function (e) { if (e.key === "Enter") open(); }}, [
      el("td", {class: "num", text: String(r.i + 1)}),
      el("td", {class: "id", title: r.p || "", text: String(r.id) + (r.cand !== undefined && String(r.id).indexOf("#") < 0 ? " #" + r.cand : "")}),
      el("td", {class: "num score", text: fmt(r.score)}),
      el("td", null, [outcome(r.correct)]),
      el("td", {class: "model", title: modelOf(r), text: shortModel(modelOf(r))}),
      el("td", {class: "num", text: String(r.n)}),
      el("td", {class: "strip-cell"}, [strip(r)]),
      el("td", {class: "flags"}, flags(r))]);
  }
  function shortModel(m) {  // "home/ubuntu/x/Sky-T1-32B" → "Sky-T1-32B": the name is at the end of a path
    return m.length > 28 && m.indexOf("/") >= 0 ? m.slice(m.lastIndexOf("/") + 1) : m;
  }

  // ------------------------------------------------------------------ trace page
  function detailOf(pos) {
    var node = document.getElementById("fluxprm-d-" + pos);
    if (node) return JSON.parse(node.textContent);
    return document.readyState === "loading" ? "pending" : null;
  }

  function renderTrace(pos) {
    var r = ROWS[POS[pos]];
    if (!r) { app.replaceChildren(el("p", {text: "No trace " + pos + " on this page."}), backButton()); return; }
    var d = r.text === "left_out" ? null : detailOf(pos);
    if (d === "pending") {
      app.replaceChildren(el("p", {class: "loading", text: "Loading trace…"}));
      document.addEventListener("DOMContentLoaded", route, {once: true});
      return;
    }
    d = d || {};
    document.title = r.id + " · " + INDEX.title;
    var k = shown.indexOf(r);
    var nav = el("nav", {class: "trace-nav"}, [backButton(),
      el("button", {id: "prev-trace", disabled: k <= 0, onclick: function () { go(k - 1); }, text: "‹ previous"}),
      el("button", {id: "next-trace", disabled: k < 0 || k >= shown.length - 1, onclick: function () { go(k + 1); }, text: "next ›"}),
      el("span", {class: "muted", text: k >= 0 ? "trace " + num(k + 1) + " of " + num(shown.length) + " in the list · keys: j / k, Esc" : "not in the filtered list"})]);
    var labels = d.labels || null;
    var lowest = lowestStep(r);
    var badges = el("div", {class: "badges"}, [
      badge("score", fmt(r.score), "the PRM's score of the trace (its own scale: fluxprm-mini's is 0–2)", null, "score"),
      outcome(r.correct),
      r.traj !== null && r.traj !== undefined ? badge("trajectory reward", fmt(r.traj), "the PRM's trajectory head", colour(r.traj)) : null,
      labels && labels.trajectory_reward !== null ? badge("teacher trajectory reward", fmt(labels.trajectory_reward), "template-guided trajectory reward from the labels file", colour(labels.trajectory_reward)) : null,
      badge("steps", String(r.n), "steps after segmentation (dropped ones included)"),
      r.truncated ? badge("truncated", r.dropped ? r.dropped + " thinking steps dropped" : "yes", "part of the trace was not seen by the PRM", null, "warn") : null,
      r.windows ? badge("windowed", r.windows + " windows", "every step scored, in consecutive context windows", null, "warn") : null,
      r.clipped ? badge("clipped", r.clipped.join(", "), "only the head and tail (problem) or the tail (step) was seen", null, "warn") : null]);
    var meta = el("dl", {class: "meta"}, [
      dt("model", r.model || "–"), dt("scored by", r.prm || "–"), dt("record", r.src + (r.cand !== undefined ? " · candidate " + r.cand : "")),
      d.gold !== undefined ? dt("gold answer", String(d.gold)) : null]);
    var header = el("section", {class: "card trace-head"}, [el("h2", {id: "trace-id", text: String(r.id)}), badges, meta,
      overview(r),
      lowest ? el("button", {class: "linkish", id: "jump-lowest", onclick: function () { flash(lowest.id); },
                             text: "jump to the lowest-reward step (" + lowest.label + " · " + fmt(lowest.value) + ")"}) : null]);
    var blocks = [nav, header, legend()];
    var notes = [];
    if (d.note) notes.push(d.note);
    if (r.text === "none") notes.push("No text for this trace: pass --traces (the files that were scored) to see its steps. Its step rewards are shown below.");
    if (r.text === "left_out") notes.push("The page-size guard left this trace's text out (see the notes on the list page). Its step rewards are shown below.");
    if (r.short) notes.push(num(r.short) + " characters of this trace were left out by the page-size guard; each cut is marked in the text.");
    if (labels && !labels.aligned && labels.n) notes.push("The labels file cut this trace into " + labels.n + " thinking steps, the scores into " + (r.nt + (r.dropped || 0)) + ": the teacher components are listed in their own table below, not beside the steps.");
    if (notes.length) blocks.push(el("section", {class: "card trace-notes"}, notes.map(function (n) { return el("p", {text: "⚠ " + n}); })));
    var problem = d.problem !== undefined ? d.problem : r.p;
    if (problem) blocks.push(el("section", {class: "card problem"}, [el("h3", {text: "Problem"}), el("div", {class: "text"}, textOf(problem))]));
    blocks.push(partView("thinking", d.thinking, r.r.slice(0, r.nt), r, labels));
    blocks.push(partView("response", d.response, r.r.slice(r.nt), r, labels));
    if (labels && !labels.aligned && labels.n) blocks.push(teacherTable(labels));
    if (d.meta) blocks.push(el("details", {class: "card record"}, [el("summary", {text: "record fields"}),
      el("dl", {class: "meta"}, Object.keys(d.meta).map(function (key) { return dt(key, JSON.stringify(d.meta[key])); }))]));
    app.replaceChildren.apply(app, blocks.filter(Boolean));
    window.scrollTo(0, 0);
  }

  function backButton() { return el("button", {id: "back", onclick: function () { location.hash = ""; }, text: "← all traces"}); }
  function go(k) { if (k >= 0 && k < shown.length) location.hash = "#t" + shown[k].i; }
  function dt(k, v) { return el("div", null, [el("dt", {text: k}), el("dd", {text: v})]); }
  function badge(name, value, title, c, cls) {
    return el("span", {class: "badge " + (cls || ""), title: title, style: c ? "background:" + css(c) + ";color:" + inkOn(c) : null},
              [el("span", {class: "badge-name", text: name}), " " + value]);
  }
  function lowestStep(r) {
    var best = null;
    r.r.forEach(function (x, j) {
      if (x !== null && (best === null || x < best.value)) {
        var think = j < r.nt;
        best = {value: x, id: "step-" + (think ? "t" : "r") + (think ? j : j - r.nt),
                label: think ? "T" + (j + 1 + (r.dropped || 0)) : "R" + (j - r.nt + 1)};
      }
    });
    return best;
  }
  function flash(id) {
    var node = document.getElementById(id);
    if (!node) return;
    node.scrollIntoView({block: "center"});
    node.classList.remove("flash"); void node.offsetWidth; node.classList.add("flash");
    node.focus({preventScroll: true});
  }

  function partView(kind, part, rewards, r, labels) {
    var think = kind === "thinking";
    var dropped = think && r.truncated ? (r.dropped || 0) : 0;
    if (!part && !rewards.length && !dropped) return null;
    // a plain answer has no thinking: no "Thinking · 0 steps scored" heading over nothing (a response with no
    // steps still gets its heading: a trace cut off mid-thought never answered, and that is worth seeing)
    if (think && !rewards.length && !dropped && !(part && (part.steps ? part.steps.length : part.text))) return null;
    var title = (think ? "Thinking" : "Response") + " · " + rewards.length + " step" + (rewards.length === 1 ? "" : "s") + " scored" +
                (dropped ? " · " + dropped + " earliest dropped" : "");
    var items = [el("h3", {text: title})];
    if (part && part.steps) {
      if (dropped) items.push(el("div", {class: "dropped", title: "not seen by the PRM: dropped to fit its context"}, [
        el("div", {class: "step-head"}, [el("span", {class: "pill", text: "T1–T" + dropped + " · dropped, not scored"})]),
        el("div", {class: "text"}, part.dropped ? textOf(part.dropped) : ["(text not available)"])]));
      var clipped = clippedSteps(r);
      part.steps.forEach(function (text, j) {
        items.push(stepView(kind, j, rewards[j], text, r, labels, clipped));
      });
    } else {
      if (rewards.length) items.push(el("div", {class: "chips"}, rewards.map(function (x, j) { return chip(kind, j, x, r); })));
      if (part && part.text !== undefined) items.push(el("div", {class: "card unsegmented"}, [
        el("div", {class: "muted", text: "text, uncoloured (it does not split into the scored steps):"}),
        el("div", {class: "text"}, textOf(part.text))]));
    }
    return el("section", {class: "part " + kind, id: "part-" + kind}, items);
  }

  function overview(r) {  // every step of the trace as one clickable strip: where are the low rewards?
    if (!r.r.length) return null;
    var dropped = r.truncated ? r.dropped || 0 : 0, cells = [];
    if (dropped) cells.push(el("div", {class: "ov dropped-ov", style: "flex-grow:" + dropped,
                                       title: "T1–T" + dropped + ": dropped, not scored"}));
    r.r.forEach(function (x, j) {
      var think = j < r.nt, kind = think ? "thinking" : "response", k = think ? j : j - r.nt;
      if (j === r.nt && r.nt) cells.push(el("div", {class: "ov-gap", title: "thinking | response"}));
      cells.push(el("div", {class: "ov", style: "flex-grow:1;background:" + css(colour(x)),
                            title: stepLabel(kind, k, r) + " · reward " + fmt(x, 4),
                            onclick: function () { flash("step-" + kind[0] + k); }}));
    });
    return el("div", {class: "overview", id: "overview", "aria-label": "step rewards of this trace"}, cells);
  }

  function stepLabel(kind, j, r) { return kind === "thinking" ? "T" + (j + 1 + (r.truncated ? r.dropped || 0 : 0)) : "R" + (j + 1); }

  function clippedSteps(r) {  // "step 3" in a windowed score counts every step, thinking first, 1-based
    var out = {};
    (r.clipped || []).forEach(function (c) { var m = /^step (\d+)$/.exec(c); if (m) out[Number(m[1]) - 1] = true; });
    return out;
  }

  function chip(kind, j, x, r) {
    var c = colour(x);
    return el("span", {class: "chip", id: "step-" + kind[0] + j, tabindex: 0,
                       title: (kind === "thinking" ? "thinking" : "response") + " step " + (j + 1) + " · reward " + fmt(x, 4),
                       style: "background:" + css(c) + ";color:" + inkOn(c), text: stepLabel(kind, j, r) + " " + fmt(x)});
  }

  function stepView(kind, j, x, text, r, labels, clipped) {
    var c = colour(x);
    var name = stepLabel(kind, j, r);
    var overall = kind === "thinking" ? j : r.nt + j;
    var teacher = null;
    if (labels && labels.aligned && kind === "thinking") {
      var t = j + labels.offset;
      var parts = [["alignment", labels.alignment[t]], ["quality", labels.quality[t]], ["coherence", labels.coherence[t]]]
        .filter(function (p) { return p[1] !== null && p[1] !== undefined; })
        .map(function (p) { return p[0] + " " + fmt(p[1]); });
      var fused = labels.reward[t];
      if (parts.length || fused !== null) {
        teacher = el("span", {class: "teacher", title: "teacher rewards from the labels file (fluxprm label)"},
          [el("span", {class: "teacher-name", text: "teacher"}), " " + parts.join(" · ") + (fused !== null && fused !== undefined ? "  →  fused " + fmt(fused) : "")]);
      }
    }
    var rewardText = x === null || x === undefined ? "no reward" : "reward " + fmt(x, 4);
    var info = el("div", {class: "step-info", hidden: true}, [name + " · " + (kind === "thinking" ? "thinking" : "response") + " step " + (j + 1) +
      " of " + (kind === "thinking" ? r.nt : r.r.length - r.nt) + " scored · PRM " + rewardText + " · rank " + rank(r, overall) + " of " + r.r.length + " (1 = lowest) in this trace"]);
    var node = el("div", {class: "step", id: "step-" + kind[0] + j, tabindex: 0, "data-reward": x === null ? "" : String(x),
                          title: name + " · " + rewardText + " (click to pin)",
                          style: "border-left-color:" + css(c) + ";background:" + tint(c, 0.4)}, [
      el("div", {class: "step-head"}, [
        el("span", {class: "reward", style: "background:" + css(c) + ";color:" + inkOn(c), text: name + " · " + fmt(x)}),
        clipped[overall] ? el("span", {class: "pill warn", title: "too long for one context window: the PRM saw only its tail", text: "clipped"}) : null,
        teacher]),
      longText(text), info]);
    var toggle = function () { info.hidden = !info.hidden; node.classList.toggle("pinned", !info.hidden); };
    node.addEventListener("click", function (e) { if (!window.getSelection().toString()) toggle(); });
    node.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
    return node;
  }

  var LONG_STEP = 3000;  // characters: longer steps are folded (the reward is read at the step's end)
  function longText(text) {
    var length = typeof text === "string" ? text.length : text[0].length + text[1] + text[2].length;
    var box = el("div", {class: "text"}, textOf(text));
    if (length <= LONG_STEP) return box;
    box.classList.add("folded");
    var button = el("button", {class: "linkish unfold", text: "show the whole step (" + num(length) + " characters)"});
    button.addEventListener("click", function (e) {
      e.stopPropagation();
      var folded = box.classList.toggle("folded");
      button.textContent = folded ? "show the whole step (" + num(length) + " characters)" : "fold the step";
    });
    return el("div", null, [box, button]);
  }

  function rank(r, overall) {
    var x = r.r[overall];
    if (x === null) return "–";
    return 1 + r.r.filter(function (y) { return y !== null && y < x; }).length;
  }

  function teacherTable(labels) {
    var rows = [];
    for (var t = 0; t < labels.n; t++) rows.push(el("tr", null, [el("td", {text: "T" + (t + 1)}),
      el("td", {text: fmt(labels.alignment[t])}), el("td", {text: fmt(labels.quality[t])}),
      el("td", {text: fmt(labels.coherence[t])}), el("td", {text: fmt(labels.reward[t])})]));
    return el("section", {class: "card"}, [el("h3", {text: "Teacher rewards (labels file, its own segmentation)"}),
      el("table", {class: "teacher-table"}, [el("thead", null, [el("tr", null, ["step", "alignment", "quality", "coherence", "fused"].map(function (h) { return el("th", {text: h}); }))]),
        el("tbody", null, rows)])]);
  }

  // ------------------------------------------------------------------ routing
  function route() {
    var m = /^#t(\d+)$/.exec(location.hash);
    if (m) { renderTrace(Number(m[1])); return; }
    renderList();
    window.scrollTo(0, state.listScroll);
  }
  window.addEventListener("hashchange", route);
  document.addEventListener("keydown", function (e) {
    if (!/^#t\d+$/.test(location.hash) || /INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)) return;
    var k = shown.indexOf(ROWS[POS[Number(location.hash.slice(2))]]);
    if (e.key === "Escape") location.hash = "";
    else if (e.key === "j") go(k + 1);
    else if (e.key === "k") go(k - 1);
  });

  var summary = document.getElementById("summary");
  summary.title = "scores: " + INDEX.scores + (INDEX.traces.length ? "\ntraces: " + INDEX.traces.join(", ") : "") +
                  (INDEX.labels ? "\nlabels: " + INDEX.labels : "");
  summary.textContent = num(ROWS.length) + " traces" + (INDEX.prms.length ? " · scored by " + INDEX.prms.join(", ") : "") +
    (INDEX.labels ? " · teacher rewards: " + INDEX.labels.split(/[\\/]/).pop() : "") + " · fluxprm " + INDEX.version;
  refilter();
  route();
  // Time to first render: set after the frame that paints the first view (read by tests and benchmarks).
  requestAnimationFrame(function () {
    setTimeout(function () {
      if (firstRenderDone) return;
      firstRenderDone = true;
      window.fluxprmFirstRender = performance.now();
      document.documentElement.setAttribute("data-first-render", String(Math.round(window.fluxprmFirstRender)));
    }, 0);
  });
})();
