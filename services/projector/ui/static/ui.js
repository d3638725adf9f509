// The saga view's live feed. A page with a data-feed element opens an
// EventSource on that URL; the server sends rows (or a timeline) rendered
// by the same templates as the page, escaped by html/template, and this
// puts them in place. Without JavaScript the pages work, but do not move.
(function () {
  'use strict';
  var table = document.querySelector('table[data-feed]');
  var timeline = document.querySelector('#timeline[data-feed]');
  var source = table || timeline;
  if (!source || !window.EventSource) {
    return;
  }
  var live = document.getElementById('live');
  var feed = new EventSource(source.getAttribute('data-feed'));
  feed.onopen = function () {
    document.body.setAttribute('data-live', 'open');
    live.hidden = false;
    live.classList.remove('off');
  };
  feed.onerror = function () { // the browser reconnects by itself
    document.body.setAttribute('data-live', 'closed');
    live.classList.add('off');
  };

  function parse(html) {
    var t = document.createElement('template');
    t.innerHTML = html;
    return t.content;
  }

  feed.addEventListener('sagas', function (e) {
    var msg = JSON.parse(e.data);
    var body = table.tBodies[0];
    if (msg.all) { // the whole page, as the stream starts: what it shows now
      var shown = {};
      Array.prototype.forEach.call(body.rows, function (tr) {
        shown[tr.getAttribute('data-id')] = tr.outerHTML;
      });
      body.replaceChildren();
      msg.rows.forEach(function (r) {
        var tr = parse(r.html).firstElementChild;
        body.appendChild(tr);
        if (shown[r.id] !== tr.outerHTML) {
          tr.classList.add('flash');
        }
      });
      showEmpty();
      return;
    }
    msg.gone.forEach(function (id) {
      var tr = document.getElementById('saga-' + id);
      if (tr) {
        tr.remove();
      }
    });
    msg.rows.forEach(function (r) {
      var tr = parse(r.html).firstElementChild;
      var old = document.getElementById('saga-' + r.id);
      if (old) {
        old.replaceWith(tr);
      } else if (table.hasAttribute('data-prepend')) {
        // Newest first: IDs are time-ordered UUIDs, which sort as text.
        var next = null;
        for (var i = 0; i < body.rows.length; i++) {
          if (body.rows[i].getAttribute('data-id') < r.id) {
            next = body.rows[i];
            break;
          }
        }
        body.insertBefore(tr, next);
      } else {
        return; // a later page shows only the sagas it has
      }
      tr.classList.add('flash');
    });
    var limit = Number(table.getAttribute('data-limit')) || 0;
    while (limit > 0 && body.rows.length > limit) {
      body.deleteRow(-1);
    }
    showEmpty();
  });

  function showEmpty() {
    var empty = table.parentNode.querySelector('p.empty');
    if (empty) {
      empty.hidden = table.tBodies[0].rows.length > 0;
    }
  }

  feed.addEventListener('timeline', function (e) {
    timeline.replaceChildren(parse(JSON.parse(e.data).html));
  });
})();
