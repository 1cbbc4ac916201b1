// The hearsay node page: the live public timeline (or one post, at
// /p/{id}), a form to post, edit and delete, and the mesh.
//
// Data flow. The posts are listed, then the event stream is opened from
// the list's X-Hearsay-Token (the node's head taken before the read), so
// nothing falls between the list and the stream. Without that header, the
// token of GET /api/v0/stats, read BEFORE the list, serves: the stream then
// replays a little of what the list shows, which only updates those cards
// (events carry the whole current post, so applying one twice is harmless).
// The browser resumes a dropped stream by itself with Last-Event-Id; when it
// gives up (an error answer while the node restarts), the page reopens the
// stream from the last token it saw. `lagged` reopens from the event's
// token; `unavailable` (this node no longer holds what the token lacks)
// reloads the list and starts again from a fresh token.
//
// All user text goes into the page through textContent, never as markup.
'use strict';

(() => {
  const API = '/api/v0';
  const LIST_LIMIT = 64;
  const MAX_SHOWN = 200;
  const MESH_EVERY_MS = 3000;
  const CLOCK_EVERY_MS = 30000;
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 10000;
  const MAX_BODY_CHARS = 4096;
  const KINDS = ['post', 'edit', 'delete'];

  const $ = (id) => document.getElementById(id);
  const match = location.pathname.match(/^\/p\/([^/]+)\/?$/);
  const permalink = match ? decodeURIComponent(match[1]) : null;

  const shown = new Map(); // post id -> { post, card }
  let source = null;
  let lastToken = null;
  let retryMs = RETRY_MIN_MS;
  let retryTimer = null;
  let loaded = false;

  // ---- HTTP -----------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // One request in the JSON envelope; resolves to its body, throws ApiError.
  async function api(method, path, payload) {
    return (await request(method, path, payload)).body;
  }

  // Like api(), with the answer's X-Hearsay-Token (null without one).
  async function request(method, path, payload) {
    const init = { method, headers: { Accept: 'application/json' }, cache: 'no-store' };
    if (payload !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError('the node is not answering', 0);
    }
    let json = null;
    try {
      json = await response.json();
    } catch (e) {
      json = null;
    }
    if (!response.ok || !json || json.status !== 'OK') {
      const message = (json && json.error) || `HTTP ${response.status}`;
      throw new ApiError(message, response.status);
    }
    return { body: json.body, token: response.headers.get('X-Hearsay-Token') };
  }

  // ---- small DOM helpers ------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function shortId(id) {
    const s = String(id);
    return s.length > 16 ? `${s.slice(0, 8)}…${s.slice(-6)}` : s;
  }

  function relativeTime(ms) {
    const seconds = Math.round((Date.now() - ms) / 1000);
    if (seconds < 45) return 'just now';
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `${minutes} min ago`;
    const hours = Math.round(minutes / 60);
    if (hours < 24) return `${hours} h ago`;
    const days = Math.round(hours / 24);
    if (days < 7) return `${days} d ago`;
    return new Date(ms).toLocaleDateString();
  }

  // A stable hue per author, for the avatar.
  function hue(name) {
    let h = 0;
    for (const c of String(name)) h = (h * 31 + c.codePointAt(0)) % 360;
    return h;
  }

  function setConnection(state, text) {
    const conn = $('conn');
    conn.dataset.state = state;
    $('conn-text').textContent = text || state;
  }

  function notice(text) {
    const n = $('notice');
    n.textContent = text || '';
    n.hidden = !text;
  }

  // ---- posts ----------------------------------------------------------------

  // Newest first: by creation time, then id.
  function before(a, b) {
    if (a.created_at !== b.created_at) return a.created_at > b.created_at;
    return a.id > b.id;
  }

  function upsert(post, fresh) {
    if (!post || !post.id) return;
    if (permalink && post.id !== permalink) return;
    const entry = shown.get(post.id);
    if (entry) {
      // A tombstone is final: a late event from before the delete does not
      // bring the post back.
      if (entry.post.deleted && !post.deleted) return;
      entry.post = post;
      if (!entry.card.classList.contains('editing')) fill(entry.card, post);
      else entry.card.classList.toggle('deleted', !!post.deleted);
      return;
    }
    const card = el('article', 'card post');
    card.dataset.id = post.id;
    fill(card, post);
    const list = $('posts');
    let next = null;
    for (const other of list.children) {
      const o = shown.get(other.dataset.id);
      if (o && before(post, o.post)) {
        next = other;
        break;
      }
    }
    if (!next && list.children.length >= MAX_SHOWN) return; // older than all shown
    list.insertBefore(card, next);
    shown.set(post.id, { post, card });
    if (fresh) {
      card.classList.add('fresh');
      setTimeout(() => card.classList.remove('fresh'), 2500);
    }
    while (list.children.length > MAX_SHOWN) {
      const last = list.lastElementChild;
      shown.delete(last.dataset.id);
      last.remove();
    }
    $('empty').hidden = shown.size > 0;
  }

  function fill(card, post) {
    card.replaceChildren();
    card.classList.toggle('deleted', !!post.deleted);
    card.classList.remove('editing');

    const head = el('div', 'post-head');
    const avatar = el('span', 'avatar', String(post.author || '?').slice(0, 1).toUpperCase());
    avatar.style.setProperty('--hue', hue(post.author));
    avatar.setAttribute('aria-hidden', 'true');
    const who = el('div', 'who');
    who.append(el('span', 'author', post.author));
    const meta = el('div', 'meta');
    const time = el('a', 'time', relativeTime(post.created_at));
    time.href = `/p/${encodeURIComponent(post.id)}`;
    time.dataset.at = post.created_at;
    time.title = new Date(post.created_at).toLocaleString();
    meta.append(time);
    if (post.edited_at && !post.deleted) {
      const edited = el('span', 'edited', 'edited');
      edited.title = `edited ${new Date(post.edited_at).toLocaleString()}`;
      meta.append(edited);
    }
    if (post.signed) meta.append(el('span', 'signed', 'signed'));
    who.append(meta);
    head.append(avatar, who);
    card.append(head);

    if (post.reply_to) {
      const reply = el('div', 'reply', 'in reply to ');
      const link = el('a', null, shortId(post.reply_to));
      link.href = `/p/${encodeURIComponent(post.reply_to)}`;
      reply.append(link);
      card.append(reply);
    }

    if (post.deleted) {
      card.append(el('p', 'post-body tombstone', 'This post was deleted.'));
      return;
    }
    card.append(el('p', 'post-body', post.body));

    const tools = el('div', 'post-tools');
    const edit = el('button', 'link edit', 'Edit');
    edit.type = 'button';
    edit.addEventListener('click', () => startEdit(card));
    const del = el('button', 'link delete', 'Delete');
    del.type = 'button';
    del.addEventListener('click', () => confirmDelete(card, del));
    tools.append(edit, del);
    head.append(tools);
  }

  function startEdit(card) {
    const entry = shown.get(card.dataset.id);
    if (!entry || entry.post.deleted) return;
    const original = entry.post.body;
    card.classList.add('editing');
    const body = card.querySelector('.post-body');
    card.querySelector('.post-tools').hidden = true;
    const area = el('textarea', 'edit-area');
    area.value = original;
    area.maxLength = MAX_BODY_CHARS;
    area.rows = Math.min(8, Math.max(2, original.split('\n').length + 1));
    const error = el('span', 'error');
    const save = el('button', 'save', 'Save');
    save.type = 'button';
    const cancel = el('button', 'link', 'Cancel');
    cancel.type = 'button';
    const bar = el('div', 'post-actions');
    bar.append(error, cancel, save);
    body.replaceWith(area);
    area.after(bar);
    area.focus();
    cancel.addEventListener('click', () => fill(card, shown.get(card.dataset.id).post));
    save.addEventListener('click', async () => {
      const text = area.value;
      if (!text.trim()) {
        error.textContent = 'A post cannot be empty.';
        return;
      }
      save.disabled = true;
      try {
        // Replace the whole body: offsets count Unicode scalar values.
        const current = shown.get(card.dataset.id).post.body;
        const post = await api('PATCH', `/p/${encodeURIComponent(card.dataset.id)}`, {
          pos: 0,
          delete: [...current].length,
          insert: text,
        });
        card.classList.remove('editing');
        shown.get(card.dataset.id).post = post;
        fill(card, post);
      } catch (e) {
        error.textContent = e.message;
        save.disabled = false;
      }
    });
  }

  // Two clicks: the first arms the button for a few seconds.
  function confirmDelete(card, button) {
    if (button.dataset.armed !== '1') {
      button.dataset.armed = '1';
      button.textContent = 'Delete?';
      button.classList.add('armed');
      setTimeout(() => {
        if (button.isConnected) {
          button.dataset.armed = '';
          button.textContent = 'Delete';
          button.classList.remove('armed');
        }
      }, 4000);
      return;
    }
    button.disabled = true;
    api('DELETE', `/p/${encodeURIComponent(card.dataset.id)}`)
      .then((post) => upsert(post))
      .catch((e) => {
        button.disabled = false;
        button.textContent = `Delete failed: ${e.message}`;
      });
  }

  function refreshTimes() {
    for (const time of document.querySelectorAll('.time[data-at]')) {
      time.textContent = relativeTime(Number(time.dataset.at));
    }
  }

  // ---- the event stream -----------------------------------------------------

  function closeStream() {
    if (source) source.close();
    source = null;
    clearTimeout(retryTimer);
    retryTimer = null;
  }

  function retryLater(what) {
    clearTimeout(retryTimer);
    setConnection('reconnecting');
    retryTimer = setTimeout(what, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  }

  function eventData(ev) {
    try {
      return JSON.parse(ev.data);
    } catch (e) {
      return null;
    }
  }

  function openStream(from) {
    closeStream();
    if (from) lastToken = from;
    const query = new URLSearchParams({ kind: KINDS.join(',') });
    if (lastToken) query.set('from', lastToken);
    const es = new EventSource(`${API}/events?${query}`);
    source = es;
    const track = (ev) => {
      if (ev.lastEventId) lastToken = ev.lastEventId;
    };
    es.onopen = () => {
      retryMs = RETRY_MIN_MS;
      setConnection('live');
    };
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an error answer, e.g. while the node starts):
        // reopen from the last token seen.
        retryLater(() => openStream(lastToken));
      } else {
        setConnection('reconnecting'); // the browser retries by itself
      }
    };
    for (const kind of KINDS) {
      es.addEventListener(kind, (ev) => {
        track(ev);
        const data = eventData(ev);
        if (data && data.post) upsert(data.post, kind === 'post' && loaded);
      });
    }
    es.addEventListener('ready', (ev) => {
      track(ev);
      notice('');
      setConnection('live');
    });
    es.addEventListener('ahead', (ev) => {
      track(ev);
      const data = eventData(ev);
      notice((data && data.message) || 'This node is catching up; some changes will follow.');
    });
    es.addEventListener('lagged', (ev) => {
      const data = eventData(ev);
      openStream((data && data.token) || ev.lastEventId || lastToken);
    });
    es.addEventListener('unavailable', (ev) => {
      const data = eventData(ev);
      closeStream();
      notice((data && data.message) || 'This node cannot replay what was missed; reloading.');
      retryLater(load);
    });
  }

  // ---- first load -----------------------------------------------------------

  async function load() {
    closeStream();
    try {
      const stats = await api('GET', '/stats');
      let from = stats.token;
      if (permalink) {
        try {
          const found = await request('GET', `/p/${encodeURIComponent(permalink)}`);
          upsert(found.body.post);
          document.title = `Post by ${found.body.post.author} · hearsay`;
          from = found.token || from;
        } catch (e) {
          if (e.status !== 404 && e.status !== 400) throw e;
          notice(`No post ${permalink} on this node (yet).`);
        }
      } else {
        const list = await request('GET', `/p?limit=${LIST_LIMIT}`);
        for (const post of list.body) upsert(post);
        from = list.token || from;
      }
      $('empty').hidden = shown.size > 0 || !!permalink;
      loaded = true;
      document.body.dataset.loaded = '1';
      openStream(from);
    } catch (e) {
      notice(`Cannot reach the node: ${e.message}. Retrying…`);
      retryLater(load);
    }
  }

  // ---- the form -------------------------------------------------------------

  function setUpCompose() {
    const form = $('compose');
    if (permalink) {
      form.hidden = true;
      $('back').hidden = false;
      $('timeline-title').textContent = 'Post';
      return;
    }
    const author = $('author');
    const body = $('body');
    const count = $('count');
    const error = $('compose-error');
    try {
      author.value = localStorage.getItem('hearsay.author') || '';
    } catch (e) {
      // storage disabled: the field just starts empty
    }
    const updateCount = () => {
      const n = [...body.value].length;
      count.textContent = n ? `${n} / ${MAX_BODY_CHARS}` : '';
      count.classList.toggle('over', n > MAX_BODY_CHARS);
    };
    body.addEventListener('input', updateCount);
    body.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      error.textContent = '';
      if (!body.value.trim()) {
        error.textContent = 'Write something first.';
        return;
      }
      const name = author.value.trim();
      $('submit').disabled = true;
      try {
        const post = await api('POST', '/p', { author: name || null, body: body.value });
        try {
          localStorage.setItem('hearsay.author', name);
        } catch (e) {
          // storage disabled
        }
        body.value = '';
        updateCount();
        upsert(post, true);
      } catch (e) {
        error.textContent = e.message;
      } finally {
        $('submit').disabled = false;
      }
    });
  }

  // ---- the mesh -------------------------------------------------------------

  function fact(label, value, title) {
    const row = el('div', 'fact');
    row.append(el('span', 'fact-label', label));
    const v = el('span', 'fact-value', value);
    if (title) v.title = title;
    row.append(v);
    return row;
  }

  function renderMesh(mesh) {
    const me = mesh.self;
    $('node-label').textContent = `${me.region} · ${shortId(me.peer_id)}`;
    if (!permalink) document.title = `hearsay · ${me.region}`;
    $('node-label').title = me.peer_id;
    const self = $('mesh-self');
    self.replaceChildren();
    const head = el('div', 'mesh-node this');
    head.dataset.peer = me.peer_id;
    head.append(el('span', 'dot on'), el('span', 'region', me.region));
    head.append(el('span', 'tag', 'this node'));
    self.append(
      head,
      fact('Peer', shortId(me.peer_id), me.peer_id),
      fact('Revision', me.revision.toLocaleString()),
      fact('HTTP', me.http),
    );

    const list = $('mesh-peers');
    list.replaceChildren();
    const connected = mesh.peers.filter((p) => p.connected).length;
    $('mesh-count').textContent = `${connected} connected`;
    if (!mesh.peers.length) list.append(el('li', 'muted small', 'No other node known yet.'));
    for (const p of mesh.peers) {
      const li = el('li', `peer ${p.connected ? 'up' : 'down'}`);
      li.dataset.peer = p.peer_id;
      li.dataset.connected = p.connected ? '1' : '0';
      const line = el('div', 'peer-line');
      line.append(el('span', `dot ${p.connected ? 'on' : 'off'}`));
      const name = el('span', 'region', p.region || shortId(p.peer_id));
      name.title = p.peer_id;
      line.append(name);
      line.append(el('span', 'rtt', p.connected ? (p.rtt_ms === null ? '…' : `${formatRtt(p.rtt_ms)}`) : 'offline'));
      li.append(line);
      const details = el('div', 'peer-details muted small');
      const parts = [];
      if (p.region) parts.push(shortId(p.peer_id));
      parts.push(p.revision === null ? 'revision unknown' : `rev ${p.revision.toLocaleString()}`);
      if (p.addrs.length) parts.push(p.addrs[0]);
      details.textContent = parts.join(' · ');
      if (p.addrs.length) details.title = p.addrs.join('\n');
      li.append(details);
      list.append(li);
    }
  }

  function formatRtt(ms) {
    if (ms < 1) return `${ms.toFixed(2)} ms`;
    if (ms < 10) return `${ms.toFixed(1)} ms`;
    return `${Math.round(ms)} ms`;
  }

  async function refreshMesh() {
    try {
      renderMesh(await api('GET', '/mesh'));
      $('mesh-updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      $('mesh-updated').textContent = `Mesh unavailable: ${e.message}`;
    } finally {
      setTimeout(refreshMesh, MESH_EVERY_MS);
    }
  }

  setUpCompose();
  load();
  refreshMesh();
  setInterval(refreshTimes, CLOCK_EVERY_MS);
})();
