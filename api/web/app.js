// Courier's built-in chat page: plain JavaScript over /socket.io/ and /api.
// State lives in memory; the token in sessionStorage (one user per tab).
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem('courier.token'),
  userId: sessionStorage.getItem('courier.user'),
  socket: null,
  chats: new Map(),      // chatId -> chat from GET /api/chats (members, unread)
  users: new Map(),      // userId -> {name, online, lastSeen}
  current: null,         // open chatId
  messages: new Map(),   // chatId -> Map(messageId -> message)
};

// ---- sign in -------------------------------------------------------------

$('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('signin-error').textContent = '';
  const pasted = $('signin-token').value.trim();
  try {
    let token = pasted;
    let userId = $('signin-user').value.trim();
    if (!token) {
      if (!userId) throw new Error('enter a user id');
      const res = await fetch('/api/dev/token', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId, name: $('signin-name').value.trim() || undefined }),
      });
      const body = await res.json();
      if (!res.ok) throw new Error(res.status === 404 ? 'dev tokens are off on this server: paste a token' : body.error.message);
      token = body.token;
    } else {
      userId = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub;
    }
    sessionStorage.setItem('courier.token', token);
    sessionStorage.setItem('courier.user', userId);
    Object.assign(state, { token, userId });
    start();
  } catch (error) {
    $('signin-error').textContent = error.message;
  }
});

$('signout').addEventListener('click', () => {
  sessionStorage.clear();
  location.reload();
});

// ---- REST ----------------------------------------------------------------

async function api(method, path, body) {
  const res = await fetch('/api' + path, {
    method,
    headers: { authorization: 'Bearer ' + state.token, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error(data && data.error ? data.error.message : res.statusText);
  return data;
}

// ---- socket --------------------------------------------------------------

function start() {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me').textContent = state.userId;
  // Same origin: the page is served by the API, so io() finds /socket.io/.
  const socket = io({ auth: { token: state.token } });
  state.socket = socket;

  socket.on('connect', () => {
    $('banner').hidden = true;
    loadChats();
    if (state.current) loadHistory(state.current);
  });
  socket.on('disconnect', (reason) => {
    $('banner').hidden = false;
    // After a server-side disconnect socket.io does not retry by itself.
    if (reason === 'io server disconnect') socket.connect();
  });
  socket.on('connect_error', (error) => {
    $('banner').hidden = false;
    if (/^unauthorized/.test(error.message)) {
      socket.disconnect();
      sessionStorage.clear();
      $('app').hidden = true;
      $('banner').hidden = true;
      $('signin').hidden = false;
      $('signin-error').textContent = error.message;
    }
  });

  socket.on('message:receive', (message, ack) => {
    ack({ received: true }); // the server marks it delivered; the sender sees ✓✓
    addMessage(message.chatId, {
      messageId: message.messageId, chatId: message.chatId, senderId: message.senderId,
      senderName: message.sender && message.sender.name, content: message.content,
      seq: message.seq, createdAt: message.createdAt,
    });
    const chat = state.chats.get(message.chatId);
    if (!chat) return loadChats();
    if (message.chatId === state.current && document.visibilityState === 'visible') {
      markRead(message.chatId);
    } else if (message.seq > chat.lastSeq) {
      // Older ones were already in the unread count GET /api/chats gave.
      chat.lastSeq = message.seq;
      chat.unread += 1;
      renderChats();
    }
  });

  socket.on('message:status', (update, ack) => {
    if (typeof ack === 'function') ack();
    const message = state.messages.get(update.chatId)?.get(update.messageId);
    if (!message) return;
    message.statuses[update.userId] = maxStatus(message.statuses[update.userId], update.status);
    renderMessage(message);
  });

  socket.on('user:online', ({ userId }) => setPresence(userId, true, null));
  socket.on('user:offline', ({ userId, lastSeen }) => setPresence(userId, false, lastSeen));
  socket.on('error', (error) => console.warn('courier error', error));
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.current) markRead(state.current);
});

// ---- chats ---------------------------------------------------------------

async function loadChats() {
  try {
    const chats = await api('GET', '/chats');
    state.chats = new Map(chats.map((chat) => [chat.id, chat]));
    for (const chat of chats) {
      for (const member of chat.members) {
        state.users.set(member.userId, { name: member.name, online: member.online, lastSeen: member.lastSeen });
      }
    }
    $('chats-error').textContent = '';
    renderChats();
  } catch (error) {
    $('chats-error').textContent = error.message;
  }
}

function otherMembers(chat) {
  return chat.members.filter((m) => m.userId !== state.userId);
}

function chatTitle(chat) {
  if (chat.name) return chat.name;
  return otherMembers(chat).map((m) => m.name || m.userId).join(', ') || 'just you';
}

function presenceText(userId) {
  const user = state.users.get(userId);
  if (!user) return '';
  if (user.online) return 'online';
  return user.lastSeen ? 'last seen ' + new Date(user.lastSeen).toLocaleString() : 'offline';
}

function renderChats() {
  const list = $('chats');
  list.replaceChildren();
  for (const chat of state.chats.values()) {
    const others = otherMembers(chat);
    const peer = chat.type === 'direct' && others.length === 1 ? others[0].userId : null;
    const item = document.createElement('li');
    item.className = 'chat' + (chat.id === state.current ? ' active' : '');
    item.dataset.chatId = chat.id;
    const dot = document.createElement('span');
    dot.className = 'dot' + (peer && state.users.get(peer)?.online ? ' online' : '');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = chatTitle(chat);
    if (peer) {
      const seen = document.createElement('span');
      seen.className = 'seen';
      seen.textContent = presenceText(peer);
      name.append(seen);
    }
    const unread = document.createElement('span');
    unread.className = 'unread';
    unread.textContent = chat.unread > 0 ? String(chat.unread) : '';
    item.append(dot, name, unread);
    item.addEventListener('click', () => openChat(chat.id));
    list.append(item);
  }
  renderHeader();
}

function renderHeader() {
  const chat = state.current && state.chats.get(state.current);
  const header = $('chat-header');
  header.querySelector('.title').textContent = chat ? chatTitle(chat) : 'Pick a chat';
  const others = chat ? otherMembers(chat) : [];
  header.querySelector('.presence').textContent = chat && others.length === 1 ? presenceText(others[0].userId) : '';
}

function setPresence(userId, online, lastSeen) {
  const user = state.users.get(userId) || {};
  state.users.set(userId, { ...user, online, lastSeen: lastSeen || user.lastSeen });
  renderChats();
}

$('new-chat').addEventListener('submit', async (event) => {
  event.preventDefault();
  const members = $('new-chat-members').value.split(',').map((s) => s.trim()).filter(Boolean);
  const name = $('new-chat-name').value.trim();
  try {
    const chat = await api('POST', '/chats', {
      type: members.length === 1 && !name ? 'direct' : 'group', members, name: name || undefined,
    });
    $('new-chat-members').value = '';
    $('new-chat-name').value = '';
    await loadChats();
    openChat(chat.id);
  } catch (error) {
    $('chats-error').textContent = error.message;
  }
});

// ---- messages ------------------------------------------------------------

const RANK = { sent: 0, delivered: 1, read: 2 };
function maxStatus(a, b) {
  return (RANK[b] ?? -1) > (RANK[a] ?? -1) ? b : a;
}

async function openChat(chatId) {
  state.current = chatId;
  $('composer').hidden = false;
  renderChats();
  await loadHistory(chatId);
  markRead(chatId);
  $('composer-text').focus();
}

async function loadHistory(chatId) {
  const page = await api('GET', `/chats/${chatId}/messages?limit=100`);
  for (const m of page.reverse()) {
    const statuses = {};
    for (const s of m.statuses || []) statuses[s.userId] = s.status;
    addMessage(chatId, {
      messageId: m.messageId || m.id, chatId, senderId: m.senderId, content: m.content,
      seq: m.seq, createdAt: m.createdAt, statuses,
    }, false);
  }
  if (chatId === state.current) renderMessages();
}

function addMessage(chatId, message, render = true) {
  if (!state.messages.has(chatId)) state.messages.set(chatId, new Map());
  const known = state.messages.get(chatId).get(message.messageId);
  if (known) {
    Object.assign(known, { ...message, statuses: { ...known.statuses, ...(message.statuses || {}) } });
  } else {
    state.messages.get(chatId).set(message.messageId, { statuses: {}, ...message });
  }
  if (render && chatId === state.current) renderMessages();
}

function sortedMessages(chatId) {
  return [...(state.messages.get(chatId)?.values() || [])].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
}

function renderMessages() {
  const list = $('messages');
  list.replaceChildren(...sortedMessages(state.current).map(messageElement));
  list.scrollTop = list.scrollHeight;
}

function renderMessage(message) {
  const old = document.querySelector(`.msg[data-message-id="${message.messageId}"]`);
  if (old) old.replaceWith(messageElement(message));
}

/// ✓ sent, ✓✓ delivered (every recipient's client has it), blue ✓✓ read by all.
function overallStatus(message) {
  const chat = state.chats.get(message.chatId);
  const recipients = chat ? otherMembers(chat).map((m) => m.userId) : Object.keys(message.statuses);
  if (!message.seq) return 'pending';
  const each = recipients.map((id) => message.statuses[id] || 'sent');
  if (each.length && each.every((s) => s === 'read')) return 'read';
  if (each.length && each.every((s) => s === 'delivered' || s === 'read')) return 'delivered';
  return 'sent';
}

function messageElement(message) {
  const mine = message.senderId === state.userId;
  const item = document.createElement('li');
  item.className = 'msg' + (mine ? ' mine' : '');
  item.dataset.messageId = message.messageId;
  if (!mine && state.chats.get(message.chatId)?.type === 'group') {
    const from = document.createElement('span');
    from.className = 'from';
    from.textContent = message.senderName || state.users.get(message.senderId)?.name || message.senderId;
    item.append(from);
  }
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = message.content;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = message.createdAt ? new Date(message.createdAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
  item.append(text, meta);
  if (mine) {
    const status = overallStatus(message);
    item.dataset.status = status;
    const tick = document.createElement('span');
    tick.className = 'tick ' + status;
    tick.title = status;
    tick.textContent = status === 'pending' ? '…' : status === 'sent' ? '✓' : '✓✓';
    meta.append(tick);
  }
  return item;
}

/// Everything received in the chat is read once the chat is on screen.
function markRead(chatId) {
  const chat = state.chats.get(chatId);
  if (!chat || !state.socket) return;
  const theirs = sortedMessages(chatId).filter((m) => m.senderId !== state.userId && m.seq);
  const upToSeq = theirs.length ? theirs[theirs.length - 1].seq : 0;
  if (upToSeq === 0 && chat.unread === 0) return;
  state.socket.emit('message:read', { chatId, upToSeq: Math.max(upToSeq, chat.lastSeq || 0) }, () => {});
  chat.unread = 0;
  renderChats();
}

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const content = $('composer-text').value;
  if (!content.trim() || !state.current) return;
  $('composer-text').value = '';
  const chatId = state.current;
  const clientMsgId = crypto.randomUUID();
  const pending = { messageId: 'pending-' + clientMsgId, chatId, senderId: state.userId, content, statuses: {} };
  addMessage(chatId, pending);
  state.socket.emit('message:send', { chatId, content, messageType: 'text', clientMsgId }, (reply) => {
    state.messages.get(chatId).delete(pending.messageId);
    if (reply.error) {
      $('chats-error').textContent = reply.error.message;
    } else {
      addMessage(chatId, { ...pending, messageId: reply.messageId, seq: reply.seq, createdAt: reply.createdAt });
    }
    if (chatId === state.current) renderMessages();
  });
});

if (state.token) start();
