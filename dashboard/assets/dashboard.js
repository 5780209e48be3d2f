// restartcoord dashboard: applies the server's updates (HTML fragments
// rendered by the same templates as the first page) without a reload, and
// keeps the "uptime" cells ticking between updates. Read-only: it sends
// nothing but the EventSource request.
(function () {
  'use strict';
  var tbody = document.getElementById('fleet-body');
  var rows = new Map(); // node id -> its row, so 1,000 rows need no DOM search
  tbody.querySelectorAll('[data-node]').forEach(function (tr) { rows.set(tr.dataset.node, tr); });

  function fragment(html) {
    var t = document.createElement('template');
    t.innerHTML = html;
    return t.content.firstElementChild;
  }

  function apply(m) {
    var id;
    if (m.full) { // a (re)connection: drop rows the server no longer has
      rows.forEach(function (tr, key) {
        if (!m.rows || !(key in m.rows)) { tr.remove(); rows.delete(key); }
      });
    }
    for (id in (m.rows || {})) {
      var tr = fragment(m.rows[id]);
      var old = rows.get(id);
      if (old) { old.replaceWith(tr); } else { tbody.appendChild(tr); }
      rows.set(id, tr);
    }
    (m.removed || []).forEach(function (key) {
      var tr = rows.get(key);
      if (tr) { tr.remove(); rows.delete(key); }
    });
    (m.order || []).forEach(function (key) {
      var tr = rows.get(key);
      if (tr) { tbody.appendChild(tr); }
    });
    for (id in (m.sections || {})) {
      var el = document.getElementById(id);
      if (el) { el.innerHTML = m.sections[id]; }
    }
    document.body.dataset.seq = m.seq;
  }

  // As fmtDur in render.go: seconds only in the first minute, so a
  // thousand uptimes change text once a minute, not every second.
  function fmtDur(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    function p(n) { return (n < 10 ? '0' : '') + n; }
    if (s < 60) { return s + 's'; }
    if (s < 3600) { return Math.floor(s / 60) + 'm'; }
    if (s < 86400) { return Math.floor(s / 3600) + 'h' + p(Math.floor(s % 3600 / 60)) + 'm'; }
    return Math.floor(s / 86400) + 'd' + p(Math.floor(s % 86400 / 3600)) + 'h';
  }

  // Only cells whose text changes are written: with 1,000 rows, writing
  // every cell each second made the browser lay out the whole table.
  function tick() {
    var now = Date.now();
    tbody.querySelectorAll('[data-since]').forEach(function (td) {
      var t = Date.parse(td.dataset.since);
      if (isNaN(t)) { return; }
      var text = fmtDur(now - t);
      if (td.textContent !== text) { td.textContent = text; }
    });
  }
  setInterval(tick, 1000);

  var live = document.getElementById('live');
  function state(s, text) { document.body.dataset.live = s; live.textContent = text; }
  // EventSource reconnects by itself; the first message after each
  // (re)connection is a full snapshot.
  var es = new EventSource('events');
  es.onopen = function () { state('open', 'live'); };
  es.onerror = function () { state('reconnecting', 'reconnecting…'); };
  es.onmessage = function (e) { apply(JSON.parse(e.data)); };
}());
