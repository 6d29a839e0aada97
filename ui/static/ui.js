// Keybrake dashboard: the only script. It adds two things to pages that
// work without it: a confirmation dialog before a revoke (without script,
// the server asks on a page of its own), and the audit log's live refresh.
// No inline script or handlers anywhere: the Content-Security-Policy
// forbids them.
(function () {
  'use strict';

  // Revoke: ask in the page's <dialog>, then submit the form confirmed.
  function confirmRevoke(form) {
    var dialog = document.getElementById('confirm-dialog');
    if (!dialog || typeof dialog.showModal !== 'function') return false;
    dialog.querySelector('[data-confirm-text]').textContent = form.getAttribute('data-confirm');
    dialog.returnValue = '';
    dialog.addEventListener('close', function () {
      if (dialog.returnValue !== 'confirm') return;
      form.querySelector('input[name="confirm"]').value = 'yes';
      form.submit(); // submit() does not fire 'submit' again
    }, { once: true });
    dialog.showModal();
    return true;
  }
  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (form instanceof HTMLFormElement && form.hasAttribute('data-confirm')) {
      if (confirmRevoke(form)) ev.preventDefault();
    }
  });

  // Audit log: re-read the rows from the fragment every few seconds and
  // mark the ones that are new since the last look.
  var body = document.querySelector('tbody[data-live-src]');
  if (!body) return;
  var src = body.getAttribute('data-live-src');
  var status = document.querySelector('[data-live-status]');
  var every = 3000;
  function newest() {
    var top = body.querySelector('tr[data-call-id]');
    return top ? Number(top.getAttribute('data-call-id')) : 0;
  }
  function say(text) { if (status) status.textContent = text; }
  function refresh() {
    if (document.hidden) { setTimeout(refresh, every); return; }
    var before = newest();
    fetch(src, { credentials: 'same-origin', headers: { 'Accept': 'text/html' }, cache: 'no-store' })
      .then(function (res) {
        if (res.status === 401) {
          say('Your session has ended: sign in again to resume.');
          window.location.assign('/ui/signin?next=' + encodeURIComponent(window.location.pathname + window.location.search));
          return null;
        }
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.text();
      })
      .then(function (html) {
        if (html === null) return;
        // The fragment is server-rendered by html/template: every value in
        // it is escaped, and the CSP would stop any script regardless.
        body.innerHTML = html;
        body.querySelectorAll('tr[data-call-id]').forEach(function (tr) {
          if (before && Number(tr.getAttribute('data-call-id')) > before) tr.classList.add('new');
        });
        say('Live: updated ' + new Date().toLocaleTimeString() + '.');
        setTimeout(refresh, every);
      })
      .catch(function () {
        say('Live: the server did not answer; retrying.');
        setTimeout(refresh, every * 2);
      });
  }
  setTimeout(refresh, every);
})();
