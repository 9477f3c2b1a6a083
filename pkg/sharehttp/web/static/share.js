// The share page: a full-screen terminal on the WebSocket of
// <page path>/terminal, speaking the protocol of docs/wire-protocol.md.
(function () {
  'use strict';

  var OP_DATA = 0x00, OP_RESIZE = 0x01, OP_STATUS = 0x02, OP_ACK = 0x03, OP_PRESENCE = 0x04;
  // Acknowledge rendered output in batches rather than per message.
  var ACK_BATCH = 16 * 1024, ACK_DELAY_MS = 20;

  // The page is served at /s/<token>; everything else hangs off that path,
  // so the token never has to be read or copied by this script.
  var base = window.location.pathname.replace(/\/+$/, '');
  var encoder = new TextEncoder();
  var decoder = new TextDecoder();

  var titles = {
    NotFound: 'This link does not work',
    Revoked: 'This link was revoked',
    Expired: 'This link has expired',
    IPNotAllowed: 'Not available from your network',
    AgentNotReady: 'The Agent is not ready',
    TooManyRequests: 'Too many requests',
    Exited: 'Session ended',
    Closed: 'Session ended',
    Idle: 'Session timed out',
    PodGone: 'The Agent restarted',
    ServerShutdown: 'The share server is restarting',
    Unavailable: 'The cluster cannot be reached',
    TooSlow: 'This page fell behind',
    ProtocolError: 'Session ended',
    Error: 'Session ended',
    ConnectionLost: 'Connection lost'
  };
  // A new attempt cannot help these; the person needs a new link.
  var final = { NotFound: true, Revoked: true, Expired: true, IPNotAllowed: true };

  var el = {
    terminal: document.getElementById('terminal'),
    title: document.getElementById('title'),
    viewers: document.getElementById('viewers'),
    state: document.getElementById('state'),
    overlay: document.getElementById('overlay'),
    overlayTitle: document.getElementById('overlay-title'),
    overlayMessage: document.getElementById('overlay-message'),
    reconnect: document.getElementById('reconnect')
  };

  var term = new window.Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontSize: 14,
    fontFamily: 'ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace',
    theme: { background: '#1e1e1e' }
  });
  var fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el.terminal);
  fit.fit();

  // Ctrl+Shift+C and Ctrl+Shift+V copy and paste, as terminal emulators do;
  // Ctrl+C stays an interrupt. The browser's own paste works too.
  term.attachCustomKeyEventHandler(function (ev) {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey) {
      return true;
    }
    if (ev.code === 'KeyC') {
      var text = term.getSelection();
      if (text && navigator.clipboard) {
        navigator.clipboard.writeText(text);
      }
      return false;
    }
    if (ev.code === 'KeyV') {
      if (navigator.clipboard && navigator.clipboard.readText) {
        navigator.clipboard.readText().then(function (t) { term.paste(t); }, function () {});
      }
      return false;
    }
    return true;
  });

  var socket = null;
  var pendingAck = 0, ackTimer = null;

  function setState(s) {
    el.state.className = 'state ' + s;
  }

  function showOverlay(reason, message, canRetry) {
    el.overlayTitle.textContent = titles[reason] || 'Session ended';
    el.overlayMessage.textContent = message || '';
    el.reconnect.hidden = !canRetry;
    el.overlay.hidden = false;
    if (canRetry) {
      el.reconnect.focus();
    }
  }

  function hideOverlay() {
    el.overlay.hidden = true;
  }

  function send(op, payload) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      return;
    }
    var msg = new Uint8Array(1 + payload.length);
    msg[0] = op;
    msg.set(payload, 1);
    socket.send(msg);
  }

  function sendResize() {
    send(OP_RESIZE, encoder.encode(JSON.stringify({ cols: term.cols, rows: term.rows })));
  }

  function flushAck() {
    ackTimer = null;
    if (pendingAck > 0) {
      var msg = new Uint8Array(4);
      new DataView(msg.buffer).setUint32(0, pendingAck);
      pendingAck = 0;
      send(OP_ACK, msg);
    }
  }

  function ack(n) {
    pendingAck += n;
    if (pendingAck >= ACK_BATCH) {
      flushAck();
    } else if (ackTimer === null) {
      ackTimer = setTimeout(flushAck, ACK_DELAY_MS);
    }
  }

  term.onData(function (d) { send(OP_DATA, encoder.encode(d)); });
  term.onBinary(function (d) {
    var b = new Uint8Array(d.length);
    for (var i = 0; i < d.length; i++) {
      b[i] = d.charCodeAt(i) & 0xff;
    }
    send(OP_DATA, b);
  });
  term.onResize(function () { sendResize(); });
  window.addEventListener('resize', function () { fit.fit(); });

  function connect() {
    var status = null;
    var scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    var ws = new WebSocket(scheme + '//' + window.location.host + base + '/terminal');
    ws.binaryType = 'arraybuffer';
    socket = ws;
    ws.onopen = function () {
      setState('connected');
      hideOverlay();
      fit.fit();
      // The first message carries the size: the command starts after it.
      sendResize();
      term.focus();
    };
    ws.onmessage = function (ev) {
      var b = new Uint8Array(ev.data);
      if (b.length === 0) {
        return;
      }
      if (b[0] === OP_DATA) {
        var data = b.subarray(1);
        term.write(data, function () { ack(data.length); });
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
          status = JSON.parse(decoder.decode(b.subarray(1)));
        } catch (e) {
          status = { reason: 'Error', message: 'The server ended the session.' };
        }
      }
    };
    ws.onclose = function () {
      if (socket !== ws) {
        return;
      }
      socket = null;
      setState('ended');
      var s = status || { reason: 'ConnectionLost', message: 'The connection to the share server was lost.' };
      showOverlay(s.reason, s.message, !final[s.reason]);
    };
  }

  function start() {
    setState('connecting');
    showOverlay('', 'Connecting\u2026', false);
    el.overlayTitle.textContent = 'Connecting\u2026';
    fetch(base + '/info', { cache: 'no-store', credentials: 'omit' }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (res) {
      if (!res.ok) {
        setState('ended');
        showOverlay(res.body.reason, res.body.message, !final[res.body.reason]);
        return;
      }
      var name = res.body.namespace + '/' + res.body.name;
      el.title.textContent = name;
      document.title = name + ' \u2014 Agent terminal';
      connect();
    }, function () {
      setState('ended');
      showOverlay('ConnectionLost', 'The share server cannot be reached.', true);
    });
  }

  el.reconnect.addEventListener('click', function () {
    term.reset();
    start();
  });

  start();
}());
