// mvp28 operator console: sends forms and buttons marked data-api to the
// admin API as JSON, with the session's CSRF token. No dependencies.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var flash = function (text, isError) {
    var el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.className = isError ? "error" : "ok";
  };
  var value = function (input) {
    var v = input.value.trim();
    switch (input.dataset.type) {
      case "int": return v === "" ? undefined : Number(v);
      case "float": return v === "" ? undefined : Number(v);
      case "yuan": return v === "" ? undefined : Math.round(Number(v) * 100);
      // "600, 1200, 3000" -> [600, 1200, 3000]
      case "intlist": return v === "" ? undefined : v.split(",").map(function (s) { return Number(s.trim()); });
      default: return v;
    }
  };
  var send = function (el, body) {
    if (el.dataset.confirm && !window.confirm(el.dataset.confirm)) return;
    var headers = { "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    flash("…", false);
    fetch(el.dataset.api, {
      method: el.dataset.method || "POST",
      headers: headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (res) {
      return res.text().then(function (text) {
        var json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
        if (!res.ok) {
          var err = json && json.error ? json.error.message + " (" + json.error.code + ")" : "HTTP " + res.status;
          flash(err, true);
          return;
        }
        var then = el.dataset.then || "";
        if (then.indexOf("goto:") === 0) { window.location.assign(then.slice(5)); return; }
        if (then === "reload") { window.location.reload(); return; }
        var show = el.dataset.show;
        if (json && show && json[show] !== undefined) {
          var v = json[show];
          flash(Array.isArray(v) ? v.join("\n") : (json.ok === false ? "FAILED: " : "") + (el.dataset.label || "") + String(v), json.ok === false);
        } else {
          flash(json ? JSON.stringify(json, null, 2) : "done", false);
        }
      });
    }).catch(function (e) { flash("request failed: " + e, true); });
  };
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.dataset || !form.dataset.api) return;
    ev.preventDefault();
    var body = {};
    Array.prototype.forEach.call(form.querySelectorAll("input[name]"), function (input) {
      var v = value(input);
      if (v !== undefined) body[input.name] = v;
    });
    send(form, body);
  });
  document.addEventListener("click", function (ev) {
    var el = ev.target.closest ? ev.target.closest("button[data-api]") : null;
    if (!el) return;
    ev.preventDefault();
    send(el, undefined);
  });
})();
