// The share page: a full-screen terminal on the WebSocket <page path>/terminal,
// speaking the protocol specified in docs/wire-protocol.md.
(function () {
  'use strict';

  var OP_DATA = 0x00, OP_RESIZE = 0x01, OP_STATUS = 0x02, OP_ACK = 0x03, OP_PRESENCE = 0x04, OP_SYNC = 0x05;
  // After a dropped connection the page tries to resume its session at
  // these delays (ms), within the server's 30 s grace period.
  var RESUME_DELAYS = [500, 1000, 2000, 4000, 8000, 8000];
  // Input is sent in messages of at most this many bytes; the protocol
  // allows 64 KiB less the opcode, and a large paste must not exceed it.
  var MAX_INPUT = 32 * 1024;
  // Rendered output is acknowledged in batches rather than per message.
  var ACK_BATCH = 16 * 1024, ACK_DELAY_MS = 20;

  // The page is served at /s/<token>; its API hangs off that path, so the
  // token is never read or copied by this script.
  var base = window.location.pathname.replace(/\/+$/, '');
  var encoder = new TextEncoder();
  var decoder = new TextDecoder();

  // What the page says for each reason a session ends or a link is refused.
  var titles = {
    NotFound: 'This link does not work',
    Revoked: 'This link was revoked',
    Expired: 'This link has expired',
    UsedUp: 'This link was already used',
    IPNotAllowed: 'Not available from your network',
    Forbidden: 'Access refused',
    AgentNotReady: 'The Agent is not ready',
    TooManyRequests: 'Too many requests',
    Exited: 'Session ended',
    Closed: 'Session ended',
    Idle: 'Session timed out',
    PodGone: 'The Agent restarted',
    ServerShutdown: 'The share server is restarting',
    Unavailable: 'Temporarily unavailable',
    TooSlow: 'This page fell behind',
    ModeChanged: 'This link changed',
    TooManyViewers: 'This link is full',
    ProtocolError: 'Session ended',
    Error: 'Session ended',
    ConnectionLost: 'Connection lost'
  };
  var defaultMessages = {
    NotFound: 'The link is wrong, or sharing was turned off. Ask for a new link.',
    ConnectionLost: 'The connection to the share server was lost.'
  };
  // Reconnecting cannot help these: the person needs a new link.
  var final = { NotFound: true, Revoked: true, Expired: true, UsedUp: true, IPNotAllowed: true, Forbidden: true };

  var el = {
    terminal: document.getElementById('terminal'),
    title: document.getElementById('title'),
    viewers: document.getElementById('viewers'),
    mode: document.getElementById('mode'),
    hint: document.getElementById('hint'),
    state: document.getElementById('state'),
    overlay: document.getElementById('overlay'),
    panel: document.querySelector('#overlay .panel'),
    overlayTitle: document.getElementById('overlay-title'),
    overlayMessage: document.getElementById('overlay-message'),
    overlayDetail: document.getElementById('overlay-detail'),
    reconnect: document.getElementById('reconnect')
  };

  nonceInjectedStyles();

  var isMac = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);
  var copyHint = isMac ? 'Copy: \u2318C' : 'Copy: select, Ctrl+Shift+C';
  el.hint.textContent = copyHint + (isMac ? ' \u00b7 Paste: \u2318V' : ' \u00b7 Paste: Ctrl+Shift+V or right-click');

  var term = new window.Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontSize: 14,
    fontFamily: 'ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace',
    theme: { background: '#1e1e1e' }
  });
  var fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el.terminal);
  fit.fit();

  // Ctrl+C stays an interrupt; Ctrl+Shift+C copies the selection and
  // Ctrl+Shift+V pastes, as in desktop terminals. On macOS Cmd+C and Cmd+V
  // work as in any page; everywhere the context menu offers Copy and Paste.
  term.attachCustomKeyEventHandler(function (ev) {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey || ev.altKey || ev.metaKey) {
      return true;
    }
    if (ev.code === 'KeyC') {
      ev.preventDefault(); // Chromium opens the developer tools otherwise
      copySelection();
      return false;
    }
    if (ev.code === 'KeyV') {
      // Not handled by xterm.js and not prevented: the browser pastes into
      // the terminal's text area, and xterm.js sends the pasted text.
      return false;
    }
    return true;
  });

  function copySelection() {
    var text = term.getSelection();
    if (!text) {
      return;
    }
    // Without the asynchronous clipboard (plain http), the copy command
    // fires the copy event that xterm.js answers with its selection.
    var legacy = function () { document.execCommand('copy'); };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).catch(legacy);
    } else {
      legacy();
    }
  }

  // The current connection; null when there is none.
  var conn = null;
  // resume is where the page's output stands: the shared session's ID and
  // the offset of the next output byte; attempt counts resume tries.
  var resume = null;
  var attempt = 0;
  // readOnly is true on a link in view mode (from /info): the page sends no
  // input. The server drops such a page's input anyway; this only spares
  // the person keystrokes that would go nowhere.
  var readOnly = false;

  function setState(s, label) {
    el.state.className = 'state ' + s;
    el.state.setAttribute('aria-label', label);
  }

  function showNotice(reason, message, detail, opts) {
    el.overlayTitle.textContent = titles[reason] || 'Session ended';
    el.overlayMessage.textContent = message || defaultMessages[reason] || '';
    el.overlayDetail.textContent = detail || '';
    el.overlay.classList.toggle('ended', !!opts.ended);
    el.panel.classList.toggle('bad', !!opts.bad);
    el.reconnect.hidden = !opts.retry;
    el.overlay.hidden = false;
    if (opts.retry) {
      el.reconnect.focus();
    }
  }

  function showConnecting() {
    setState('connecting', 'Connecting');
    el.overlayTitle.textContent = 'Connecting\u2026';
    el.overlayMessage.textContent = '';
    el.overlayDetail.textContent = '';
    el.overlay.classList.remove('ended');
    el.panel.classList.remove('bad');
    el.reconnect.hidden = true;
    el.overlay.hidden = false;
  }

  // ended tells how a session or an attempt ended. hadSession says whether
  // a terminal ran, whose output should stay readable.
  function ended(st, hadSession) {
    setState('ended', 'Disconnected');
    var detail = '';
    if (typeof st.exitCode === 'number' && !/exit code/i.test(st.message || '')) {
      detail = 'Exit code ' + st.exitCode;
    }
    showNotice(st.reason, st.message, detail, {
      ended: hadSession,
      bad: !!final[st.reason],
      retry: !final[st.reason]
    });
  }

  // refusal reads the JSON body of a refused request.
  function refusal(r) {
    return r.json().then(function (body) {
      return body && body.reason ? body : { reason: 'Error', message: 'The share server answered ' + r.status + '.' };
    }, function () {
      return { reason: r.status === 404 ? 'NotFound' : 'Error', message: 'The share server answered ' + r.status + '.' };
    });
  }

  // fetchInfo resolves to {ok: true, info} or {ok: false, status}.
  function fetchInfo() {
    return fetch(base + '/info', { cache: 'no-store', credentials: 'omit' }).then(function (r) {
      if (r.ok) {
        return r.json().then(function (info) { return { ok: true, info: info }; });
      }
      return refusal(r).then(function (st) { return { ok: false, status: st }; });
    });
  }

  function send(c, op, payload) {
    if (conn !== c || c.ws.readyState !== WebSocket.OPEN) {
      return;
    }
    var msg = new Uint8Array(1 + payload.length);
    msg[0] = op;
    msg.set(payload, 1);
    c.ws.send(msg);
  }

  function sendInput(bytes) {
    if (!conn || readOnly) {
      return;
    }
    for (var i = 0; i < bytes.length; i += MAX_INPUT) {
      send(conn, OP_DATA, bytes.subarray(i, i + MAX_INPUT));
    }
  }

  function sendResize() {
    if (conn) {
      send(conn, OP_RESIZE, encoder.encode(JSON.stringify({ cols: term.cols, rows: term.rows })));
    }
  }

  function flushAck(c) {
    c.ackTimer = null;
    if (c.pendingAck > 0) {
      var msg = new Uint8Array(4);
      new DataView(msg.buffer).setUint32(0, c.pendingAck);
      c.pendingAck = 0;
      send(c, OP_ACK, msg);
    }
  }

  // ack credits n rendered bytes to the connection they came on.
  function ack(c, n) {
    c.pendingAck += n;
    if (c.pendingAck >= ACK_BATCH) {
      if (c.ackTimer !== null) {
        clearTimeout(c.ackTimer);
      }
      flushAck(c);
    } else if (c.ackTimer === null) {
      c.ackTimer = setTimeout(function () { flushAck(c); }, ACK_DELAY_MS);
    }
  }

  term.onData(function (d) { sendInput(encoder.encode(d)); });
  term.onBinary(function (d) {
    var b = new Uint8Array(d.length);
    for (var i = 0; i < d.length; i++) {
      b[i] = d.charCodeAt(i) & 0xff;
    }
    sendInput(b);
  });
  term.onResize(sendResize);

  // Fit the terminal to its box whenever the box changes, once a frame.
  var fitPending = false;
  function scheduleFit() {
    if (fitPending) {
      return;
    }
    fitPending = true;
    window.requestAnimationFrame(function () {
      fitPending = false;
      fit.fit();
    });
  }
  if (window.ResizeObserver) {
    new ResizeObserver(scheduleFit).observe(el.terminal);
  } else {
    window.addEventListener('resize', scheduleFit);
  }

  function connect() {
    var scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    var query = resume ? '?resume=' + encodeURIComponent(resume.session + ':' + resume.offset) : '';
    var c = {
      ws: new WebSocket(scheme + '//' + window.location.host + base + '/terminal' + query),
      opened: false,
      status: null,
      pendingAck: 0,
      ackTimer: null
    };
    c.ws.binaryType = 'arraybuffer';
    conn = c;
    c.ws.onopen = function () {
      c.opened = true;
      attempt = 0;
      setState('connected', 'Connected');
      el.overlay.hidden = true;
      fit.fit();
      // The first message carries the size: the command starts after it.
      sendResize();
      term.focus();
    };
    c.ws.onmessage = function (ev) {
      var b = new Uint8Array(ev.data);
      if (b.length === 0 || conn !== c) {
        return;
      }
      if (b[0] === OP_DATA) {
        var data = b.subarray(1);
        if (resume) {
          resume.offset += data.length;
        }
        term.write(data, function () { ack(c, data.length); });
      } else if (b[0] === OP_SYNC) {
        try {
          var sync = JSON.parse(decoder.decode(b.subarray(1)));
          if (resume && resume.session !== sync.session) {
            term.write('\r\n\x1b[2m[a new session started]\x1b[0m\r\n');
          } else if (resume && sync.offset > resume.offset) {
            term.write('\r\n\x1b[2m[some output was missed while disconnected]\x1b[0m\r\n');
          }
          resume = { session: sync.session, offset: sync.offset };
        } catch (e) {
          resume = null;
        }
      } else if (b[0] === OP_PRESENCE) {
        try {
          var n = JSON.parse(decoder.decode(b.subarray(1))).viewers;
          el.viewers.textContent = n === 1 ? '1 viewer' : n + ' viewers';
          el.viewers.hidden = false;
        } catch (e) {
          // A malformed presence message changes nothing on the page.
        }
      } else if (b[0] === OP_STATUS) {
        try {
          c.status = JSON.parse(decoder.decode(b.subarray(1)));
        } catch (e) {
          c.status = { reason: 'Error', message: 'The server ended the session.' };
        }
      }
    };
    c.ws.onclose = function () {
      if (conn !== c) {
        return;
      }
      conn = null;
      if (c.ackTimer !== null) {
        clearTimeout(c.ackTimer);
      }
      // The count was of the people on this connection's session; without
      // a connection the page no longer knows it, and after a revocation
      // or an exit there is no one watching through this link. A resumed
      // or new connection is told the count again.
      el.viewers.hidden = true;
      el.viewers.textContent = '';
      if (c.status && c.status.reason) {
        ended(c.status, c.opened);
        return;
      }
      // No status: the handshake was refused, or the connection dropped.
      // Ask why, so that a revoked link is not called a network problem.
      // A dropped session is resumed a few times within the server's grace
      // period, with the output missed meanwhile; then the page stops and
      // offers the button.
      var resumable = resume && (c.opened || attempt > 0) && attempt < RESUME_DELAYS.length;
      fetchInfo().then(function (res) {
        if (res.ok && resumable) {
          showResuming();
          setTimeout(connect, RESUME_DELAYS[attempt++]);
          return;
        }
        ended(res.ok ? { reason: 'ConnectionLost' } : res.status, c.opened);
      }, function () {
        if (resumable) {
          showResuming();
          setTimeout(connect, RESUME_DELAYS[attempt++]);
          return;
        }
        ended({ reason: 'ConnectionLost', message: 'The share server cannot be reached.' }, c.opened);
      });
    };
  }

  function start() {
    showConnecting();
    fetchInfo().then(function (res) {
      if (!res.ok) {
        ended(res.status, false);
        return;
      }
      var name = res.info.namespace + '/' + res.info.name;
      el.title.textContent = name;
      setReadOnly(res.info.mode === 'view');
      document.title = name + ' \u2014 Agent terminal';
      connect();
    }, function () {
      ended({ reason: 'ConnectionLost', message: 'The share server cannot be reached.' }, false);
    });
  }

  function setReadOnly(on) {
    readOnly = on;
    el.mode.hidden = !on;
    term.options.disableStdin = on;
    term.options.cursorBlink = !on;
    if (on) {
      el.hint.textContent = copyHint;
    }
  }

  function showResuming() {
    showConnecting();
    setState('connecting', 'Reconnecting');
    el.overlayTitle.textContent = 'Reconnecting\u2026';
    el.overlayMessage.textContent = 'The connection dropped; picking the session up where it left off.';
  }

  el.reconnect.addEventListener('click', function () {
    term.reset();
    resume = null;
    attempt = 0;
    start();
  });

  // xterm.js styles its rows, colours, cursor, selection and scroll bar
  // through <style> elements it creates and rewrites as it runs, and draws
  // 24-bit colours with style attributes. The page's Content-Security-Policy
  // (style-src 'self' 'nonce-…', fresh for each response) applies a <style>
  // only if it carries that nonce, which the page gives its own style sheet
  // link: each <style> created through document.createElement gets it, so
  // xterm.js's rules apply and nothing is refused. A nonce never allows a
  // style attribute, and their values (any colour) cannot be listed as
  // hashes, so setAttribute('style', …) becomes an assignment to
  // element.style.cssText, which is the CSSOM and outside the policy.
  // Markup injected into the page would get neither: it has no nonce, and
  // its style attributes are parsed, not set through setAttribute.
  function nonceInjectedStyles() {
    var link = document.getElementById('page-style');
    var nonce = link ? link.nonce : '';
    var createElement = Document.prototype.createElement;
    Document.prototype.createElement = function () {
      var created = createElement.apply(this, arguments);
      if (nonce && created.localName === 'style') {
        created.nonce = nonce;
      }
      return created;
    };
    var setAttribute = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function (name, value) {
      if (this.style && String(name).toLowerCase() === 'style') {
        this.style.cssText = String(value);
        return;
      }
      setAttribute.apply(this, arguments);
    };
  }

  start();
}());
