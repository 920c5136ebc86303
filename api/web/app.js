// Courier's built-in chat page: plain JavaScript over /ws and /api. The /ws
// side is the TypeScript client of clients/js (its build, served next to this
// file): it reconnects, resends unanswered sends, acknowledges and
// deduplicates what comes in. State lives in memory; the token in
// sessionStorage (one user per tab).
import { CourierClient } from '/web/courier-client.js';

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem('courier.token'),
  userId: null,          // the token's `sub`
  name: null,            // the token's `name`, for the header
  client: null,          // the CourierClient, once signed in
  chats: new Map(),      // chatId -> chat from GET /api/chats (members, unread)
  users: new Map(),      // userId -> {name, online, lastSeen}
  current: null,         // open chatId
  messages: new Map(),   // chatId -> Map(messageId -> message)
  selected: null,        // messageId whose actions (react, reply, edit, delete) show
  composing: null,       // {mode: 'edit' | 'reply', chatId, messageId} or null: a plain send
  typing: new Map(),     // chatId -> Map(userId -> timer that hides it)
  myTyping: null,        // {chatId, at}: the chat this page said typing:start in, and when
  reactionLoads: new Map(), // messageId -> number of the latest reactions read started
};
// For the browser test (tests/node/browser.test.mjs) and the console: modules keep their names to themselves.
window.state = state;

/// The reactions offered on every message (any emoji works on the wire).
const EMOJI = ['👍', '❤️', '😂', '🎉', '😮'];
/// How often typing:start is repeated while the user keeps typing (the
/// server's indicator lasts 6 s; the rate limit allows 10 per 5 s).
const TYPING_REPEAT_MS = 3000;

// ---- sign in -------------------------------------------------------------

/// Who a token says it is: `{userId, name}` from its payload, read but not
/// verified (the server does that when the socket connects). Pasted text is
/// often cut short or mangled, so every way this fails throws an Error whose
/// message is for people, never a raw TypeError or DOMException.
function readToken(token) {
  const invalid = (why) => new Error('That is not a valid token: ' + why);
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[0] || !parts[1]) {
    throw invalid('a token is three parts separated by dots (header.payload.signature). Paste the whole of it.');
  }
  let claims;
  try {
    const bytes = Uint8Array.from(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    claims = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)); // names are UTF-8, atob gives bytes
  } catch {
    throw invalid('its middle part is not base64url-encoded JSON. Was it cut short?');
  }
  if (!claims || typeof claims.sub !== 'string' || !claims.sub) throw invalid('it names no user (no "sub" claim).');
  const name = typeof claims.name === 'string' ? claims.name.trim() : '';
  return { userId: claims.sub, name: name || null };
}

/// A response's JSON body, or null when it has none or is not JSON (a proxy's
/// error page): callers fall back to the status then.
async function jsonBody(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

$('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('signin-error').textContent = '';
  // Tokens hold no spaces: drop a copied "Bearer " and the breaks of a wrapped line.
  const pasted = $('signin-token').value.replace(/^\s*bearer\s+/i, '').replace(/\s+/g, '');
  try {
    let token = pasted;
    if (!token) {
      const userId = $('signin-user').value.trim();
      if (!userId) throw new Error('Enter a user id, or paste a token.');
      const res = await fetch('/api/dev/token', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId, name: $('signin-name').value.trim() || undefined }),
      }).catch(() => {
        throw new Error('Cannot reach the server. Try again in a moment.');
      });
      const body = await jsonBody(res);
      if (res.status === 404) throw new Error('Dev tokens are off on this server: paste a token.');
      if (!res.ok || !body?.token) throw new Error(body?.error?.message || `The server answered ${res.status} ${res.statusText}.`);
      token = body.token;
    }
    const who = readToken(token);
    sessionStorage.setItem('courier.token', token);
    Object.assign(state, { token }, who);
    start();
  } catch (error) {
    $('signin-error').textContent = error.message;
  }
});

$('signout').addEventListener('click', () => {
  state.client?.close();
  sessionStorage.clear();
  location.reload();
});

/// The signed-in user's name (the token's, else the one the server has for
/// them), with the id on hover; the id alone when there is no name.
function renderMe() {
  const me = $('me');
  me.textContent = state.name || state.users.get(state.userId)?.name || state.userId;
  me.title = state.userId;
}

// ---- REST ----------------------------------------------------------------

async function api(method, path, body) {
  const res = await fetch('/api' + path, {
    method,
    headers: { authorization: 'Bearer ' + state.token, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = res.status === 204 ? null : await jsonBody(res);
  if (!res.ok) throw new Error(data?.error?.message || `${res.status} ${res.statusText}`);
  return data;
}

// ---- socket --------------------------------------------------------------

function start() {
  $('signin').hidden = true;
  $('app').hidden = false;
  renderMe();
  // Same origin: the page is served by the API, so the client finds /ws there.
  const client = new CourierClient({ token: state.token });
  state.client = client;

  // The server's word on who this is (it checked the token); it sends no name.
  // Every (re)connection starts with it: the page reloads what it shows.
  client.on('session:ready', ({ userId }) => {
    state.userId = userId;
    renderMe();
    $('banner').hidden = true;
    loadChats();
    if (state.current) loadHistory(state.current);
  });
  client.on('disconnected', () => {
    $('banner').hidden = false;
  });
  // Stopped for good: signed out, or the server refused the token (or the
  // device). A refused token will not be accepted on a retry: back to the
  // form, with the server's reason ("token has expired"), to paste another.
  client.on('closed', (error) => {
    if (error.code === 'closed') return;
    sessionStorage.clear();
    Object.assign(state, { token: null, client: null });
    $('app').hidden = true;
    $('banner').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = error.code === 'unauthorized'
      ? 'The server refused the token: ' + error.message + '.'
      : 'Signed out: ' + error.message + '.';
  });

  // The client acknowledges each entry after these handlers ran (the sender
  // then sees ✓✓), and drops one that comes again.
  client.on('message:receive', (message) => {
    addMessage(message.chatId, {
      messageId: message.messageId, chatId: message.chatId, senderId: message.senderId,
      senderName: message.sender && message.sender.name, content: message.content,
      seq: message.seq, createdAt: message.createdAt,
      replyTo: message.replyTo || null, editedAt: message.editedAt || null, deleted: Boolean(message.deleted),
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

  client.on('message:status', (update) => {
    const message = state.messages.get(update.chatId)?.get(update.messageId);
    if (!message) return;
    message.statuses[update.userId] = maxStatus(message.statuses[update.userId], update.status);
    renderMessage(message);
  });

  // Edits, deletes and reactions: entries of the chat's log, acknowledged
  // like messages. The page's own changes are not sent back to it: it
  // applies them from the replies.
  client.on('message:edited', (edit) => applyEdit(edit.chatId, edit.messageId, edit.content, edit.editedAt));
  client.on('message:deleted', (deletion) => applyDelete(deletion.chatId, deletion.messageId));
  client.on('message:reaction', (change) => loadReactions(change.chatId, change.messageId));
  client.on('typing', ({ chatId, userId, typing, expiresInMs }) => showTyping(chatId, userId, typing ? expiresInMs : 0));

  client.on('user:online', ({ userId }) => setPresence(userId, true, null));
  client.on('user:offline', ({ userId, lastSeen }) => setPresence(userId, false, lastSeen));
  client.on('error', (error) => console.warn('courier error', error));
  // A refusal comes as `closed` (above), which also ends this promise.
  client.connect().catch(() => {});
}

/// Shows a refused request's reason under the chat list.
function showError(error) {
  $('chats-error').textContent = error.message;
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.current) markRead(state.current);
});

// ---- chats ---------------------------------------------------------------

let chatLoads = 0;

async function loadChats() {
  // Loads overlap (a backlog of messages for a chat not listed yet starts one
  // each): only the last one started may replace the list.
  const load = ++chatLoads;
  try {
    const chats = await api('GET', '/chats');
    if (load !== chatLoads) return;
    state.chats = new Map(chats.map((chat) => [chat.id, chat]));
    for (const chat of chats) {
      for (const member of chat.members) {
        state.users.set(member.userId, { name: member.name, online: member.online, lastSeen: member.lastSeen });
      }
    }
    $('chats-error').textContent = '';
    renderChats();
    renderMe();
    // Counts read before the open chat was marked read may come back: what is
    // on screen is read, so mark it again rather than show a stale badge.
    const open = state.current && state.chats.get(state.current);
    if (open && open.unread > 0 && document.visibilityState === 'visible') markRead(state.current);
  } catch (error) {
    if (load === chatLoads) $('chats-error').textContent = error.message;
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
  if (chatId !== state.current) {
    stopTyping();
    setComposing(null);
  }
  state.current = chatId;
  renderTyping();
  $('app').classList.add('chat-open'); // on a phone, the chat replaces the list
  $('composer').hidden = false;
  renderChats();
  await loadHistory(chatId);
  if (state.current !== chatId) return; // another chat was picked, or "‹ Chats", meanwhile
  markRead(chatId);
  $('composer-text').focus();
}

/// Back to the list (phones only: elsewhere the list is always beside the
/// chat). No chat is open then, so what arrives counts as unread.
function closeChat() {
  stopTyping();
  setComposing(null);
  state.current = null;
  $('app').classList.remove('chat-open');
  $('composer').hidden = true;
  $('messages').replaceChildren();
  renderChats();
  renderTyping();
}

$('back').addEventListener('click', closeChat);

async function loadHistory(chatId) {
  let page;
  try {
    page = await api('GET', `/chats/${chatId}/messages?limit=100`);
  } catch (error) {
    $('chats-error').textContent = error.message;
    return;
  }
  for (const m of page.reverse()) addMessage(chatId, fromHistory(chatId, m), false);
  if (chatId === state.current) renderMessages();
}

/// A message of GET /api/chats/{id}/messages as the page keeps it.
function fromHistory(chatId, m) {
  const statuses = {};
  for (const s of m.statuses || []) statuses[s.userId] = s.status;
  return {
    messageId: m.messageId || m.id, chatId, senderId: m.senderId, senderName: m.sender && m.sender.name,
    content: m.content, seq: m.seq, createdAt: m.createdAt, statuses,
    replyTo: m.replyTo || null, editedAt: m.editedAt || null, deleted: Boolean(m.deletedAt),
    reactions: m.reactions || [],
  };
}

function addMessage(chatId, message, render = true) {
  if (!state.messages.has(chatId)) state.messages.set(chatId, new Map());
  const known = state.messages.get(chatId).get(message.messageId);
  if (known) {
    // What the page already applied wins over an older copy (a message sent
    // again, or a history page read before an edit or delete came in).
    const update = { ...message, statuses: { ...known.statuses, ...(message.statuses || {}) } };
    if (known.deleted) Object.assign(update, { deleted: true, content: '', reactions: [] });
    else if (isOlder(message.editedAt, known.editedAt)) Object.assign(update, { content: known.content, editedAt: known.editedAt });
    Object.assign(known, update);
  } else {
    state.messages.get(chatId).set(message.messageId, { statuses: {}, reactions: [], ...message });
  }
  if (render && chatId === state.current) renderMessages();
}

/// Whether edit time `a` is before `b` (an unedited message's null is before any).
function isOlder(a, b) {
  if (!b) return false;
  return !a || Date.parse(a) < Date.parse(b);
}

function findMessage(chatId, messageId) {
  return state.messages.get(chatId)?.get(messageId);
}

/// The first 100 characters, as the server quotes a message a reply answers.
function quoteOf(content) {
  return [...content].slice(0, 100).join('');
}

/// `message:edited`, or this page's own edit: the latest content wins.
function applyEdit(chatId, messageId, content, editedAt) {
  const message = findMessage(chatId, messageId);
  if (!message || message.deleted || isOlder(editedAt, message.editedAt)) return;
  Object.assign(message, { content, editedAt });
  for (const other of state.messages.get(chatId).values()) {
    if (other.replyTo?.messageId === messageId && !other.replyTo.deleted) other.replyTo = { ...other.replyTo, quote: quoteOf(content) };
  }
  if (chatId === state.current) renderMessages(true);
}

/// `message:deleted`, or this page's own delete: a tombstone in its place.
function applyDelete(chatId, messageId) {
  const message = findMessage(chatId, messageId);
  if (!message) return;
  Object.assign(message, { deleted: true, content: '', reactions: [] });
  for (const other of state.messages.get(chatId).values()) {
    if (other.replyTo?.messageId === messageId) other.replyTo = { ...other.replyTo, quote: '', deleted: true };
  }
  if (state.composing?.mode === 'edit' && state.composing.messageId === messageId) setComposing(null);
  if (chatId === state.current) renderMessages(true);
}

/// A message's reactions as the server counts them now (one message of
/// history: the page keeps counts per emoji, not who reacted). Only the
/// latest read started for a message may replace them.
async function loadReactions(chatId, messageId) {
  const message = findMessage(chatId, messageId);
  if (!message || !message.seq) return;
  const load = (state.reactionLoads.get(messageId) || 0) + 1;
  state.reactionLoads.set(messageId, load);
  let page;
  try {
    page = await api('GET', `/chats/${chatId}/messages?before=${message.seq + 1}&limit=1`);
  } catch (error) {
    $('chats-error').textContent = error.message;
    return;
  }
  if (state.reactionLoads.get(messageId) !== load || page[0]?.messageId !== messageId) return;
  addMessage(chatId, fromHistory(chatId, page[0]), false);
  if (chatId === state.current) renderMessages(true);
}

function sortedMessages(chatId) {
  return [...(state.messages.get(chatId)?.values() || [])].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
}

/// Redraws the open chat: scrolled to the newest message, or (`keepScroll`,
/// for a change to a message already shown) where the user was.
function renderMessages(keepScroll = false) {
  const list = $('messages');
  const top = list.scrollTop;
  list.replaceChildren(...sortedMessages(state.current).map(messageElement));
  list.scrollTop = keepScroll ? top : list.scrollHeight;
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
  if (message.replyTo) item.append(quoteElement(message.chatId, message.replyTo));
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = message.deleted ? 'This message was deleted' : message.content;
  if (message.deleted) item.classList.add('deleted');
  const meta = document.createElement('span');
  meta.className = 'meta';
  if (message.editedAt && !message.deleted) {
    const edited = document.createElement('span');
    edited.className = 'edited';
    edited.title = 'edited ' + new Date(message.editedAt).toLocaleString();
    edited.textContent = 'edited ';
    meta.append(edited);
  }
  meta.append(message.createdAt ? new Date(message.createdAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');
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
  if (message.reactions?.length) item.append(reactionsElement(message));
  // Stored and not deleted: a tap (or hover) shows what can be done with it.
  if (message.seq && !message.deleted) {
    item.classList.add('actionable');
    if (state.selected === message.messageId) item.classList.add('selected');
    item.append(actionsElement(message, mine));
    item.addEventListener('click', (event) => {
      if (!event.target.closest('button')) select(state.selected === message.messageId ? null : message.messageId);
    });
  }
  return item;
}

/// Shows the actions of one message (null: of none).
function select(messageId) {
  state.selected = messageId;
  for (const item of document.querySelectorAll('.msg.actionable')) item.classList.toggle('selected', item.dataset.messageId === messageId);
}

function senderName(userId) {
  if (userId === state.userId) return 'You';
  return state.users.get(userId)?.name || userId;
}

/// What a reply answers: its sender and first words, or that it was deleted.
function quoteElement(chatId, replyTo) {
  const quote = document.createElement('span');
  quote.className = 'quote' + (replyTo.deleted ? ' deleted' : '');
  quote.dataset.replyTo = replyTo.messageId;
  const from = document.createElement('span');
  from.className = 'quote-from';
  from.textContent = senderName(replyTo.senderId);
  const text = document.createElement('span');
  text.className = 'quote-text';
  text.textContent = replyTo.deleted ? 'deleted message' : replyTo.quote;
  quote.append(from, text);
  return quote;
}

/// One chip per emoji with its count; the user's own are marked, and a
/// click on a chip adds or takes back the user's reaction.
function reactionsElement(message) {
  const list = document.createElement('span');
  list.className = 'reactions';
  for (const { emoji, count, mine } of message.reactions) {
    const chip = document.createElement('button');
    chip.type = 'button';
    chip.className = 'reaction' + (mine ? ' mine' : '');
    chip.dataset.emoji = emoji;
    chip.title = mine ? 'take back your ' + emoji : 'react with ' + emoji;
    const count_ = document.createElement('span');
    count_.className = 'count';
    count_.textContent = String(count);
    chip.append(emoji + ' ', count_);
    chip.addEventListener('click', () => toggleReaction(message, emoji));
    list.append(chip);
  }
  return list;
}

function actionsElement(message, mine) {
  const actions = document.createElement('span');
  actions.className = 'actions';
  const button = (action, label, title, onClick) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'action';
    b.dataset.action = action;
    b.textContent = label;
    b.title = title;
    b.addEventListener('click', onClick);
    actions.append(b);
  };
  for (const emoji of EMOJI) {
    button('react', emoji, 'react with ' + emoji, () => toggleReaction(message, emoji));
    actions.lastChild.dataset.emoji = emoji;
  }
  button('reply', 'Reply', 'reply to this message', () => setComposing({ mode: 'reply', chatId: message.chatId, messageId: message.messageId }));
  if (mine) {
    button('edit', 'Edit', 'edit this message', () => setComposing({ mode: 'edit', chatId: message.chatId, messageId: message.messageId }));
    button('delete', 'Delete', 'delete this message for everyone', () => deleteMessage(message));
  }
  return actions;
}

function toggleReaction(message, emoji) {
  const mine = message.reactions?.some((r) => r.emoji === emoji && r.mine);
  const { chatId, messageId } = message;
  const change = mine ? state.client.unreact(messageId, emoji) : state.client.react(messageId, emoji);
  // This page is not sent its own change; read back the counts it made.
  change.then(() => loadReactions(chatId, messageId), showError);
}

function deleteMessage(message) {
  if (!confirm('Delete this message for everyone?')) return;
  const { chatId, messageId } = message;
  state.client.delete(messageId).then(() => applyDelete(chatId, messageId), showError);
}

// ---- composer: send, reply, edit; typing --------------------------------

/// Puts the composer in reply or edit mode for a message (null: plain send).
function setComposing(composing) {
  const message = composing && findMessage(composing.chatId, composing.messageId);
  if (state.composing?.mode === 'edit' && composing?.mode !== 'edit') $('composer-text').value = ''; // the edit is dropped
  state.composing = message ? composing : null;
  const context = $('composer-context');
  const button = $('composer').querySelector('button[type=submit]');
  select(null);
  if (!state.composing) {
    context.hidden = true;
    button.textContent = 'Send';
    return;
  }
  const label = context.querySelector('.label');
  if (composing.mode === 'edit') {
    stopTyping();
    label.textContent = 'Editing your message';
    $('composer-text').value = message.content;
    button.textContent = 'Save';
  } else {
    label.textContent = 'Replying to ' + senderName(message.senderId) + ': ' + (message.deleted ? 'deleted message' : quoteOf(message.content));
    button.textContent = 'Send';
  }
  context.hidden = false;
  $('composer-text').focus();
}

$('composer-cancel').addEventListener('click', () => setComposing(null));
$('composer-text').addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && state.composing) $('composer-cancel').click();
});

/// typing:start when the user types (again every few seconds while they
/// go on), typing:stop when they send, clear the field or leave it.
$('composer-text').addEventListener('input', () => {
  if (!state.current || state.composing?.mode === 'edit') return;
  if (!$('composer-text').value) return stopTyping();
  const now = Date.now();
  const mine = state.myTyping;
  if (mine && mine.chatId === state.current && now - mine.at < TYPING_REPEAT_MS) return;
  if (mine && mine.chatId !== state.current) stopTyping();
  state.myTyping = { chatId: state.current, at: now };
  state.client?.startTyping(state.current).catch(() => {}); // rate_limited, or offline: harmless
});
$('composer-text').addEventListener('blur', () => stopTyping());

function stopTyping() {
  const mine = state.myTyping;
  if (!mine) return;
  state.myTyping = null;
  state.client?.stopTyping(mine.chatId).catch(() => {});
}

/// Shows (for `expiresInMs`) or hides "X is typing…" for a member of a chat.
function showTyping(chatId, userId, expiresInMs) {
  if (userId === state.userId) return;
  if (!state.typing.has(chatId)) state.typing.set(chatId, new Map());
  const typers = state.typing.get(chatId);
  clearTimeout(typers.get(userId));
  typers.delete(userId);
  if (expiresInMs > 0) {
    typers.set(userId, setTimeout(() => {
      typers.delete(userId);
      renderTyping();
    }, expiresInMs));
  }
  renderTyping();
}

function renderTyping() {
  const line = $('typing');
  const names = [...(state.typing.get(state.current)?.keys() || [])].map(senderName);
  line.textContent =
    names.length === 0 ? '' :
    names.length === 1 ? `${names[0]} is typing…` :
    names.length === 2 ? `${names[0]} and ${names[1]} are typing…` :
    `${names.length} people are typing…`;
  line.hidden = names.length === 0;
}

/// Everything received in the chat is read once the chat is on screen.
function markRead(chatId) {
  const chat = state.chats.get(chatId);
  if (!chat || !state.client) return;
  const theirs = sortedMessages(chatId).filter((m) => m.senderId !== state.userId && m.seq);
  const upToSeq = theirs.length ? theirs[theirs.length - 1].seq : 0;
  if (upToSeq === 0 && chat.unread === 0) return;
  state.client.read({ chatId, upToSeq: Math.max(upToSeq, chat.lastSeq || 0) }).catch(() => {});
  chat.unread = 0;
  renderChats();
}

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const content = $('composer-text').value;
  if (!content.trim() || !state.current) return;
  $('composer-text').value = '';
  stopTyping();
  const chatId = state.current;
  const composing = state.composing;
  setComposing(null);
  if (composing?.mode === 'edit') {
    const { messageId } = composing;
    if (findMessage(chatId, messageId)?.content === content) return; // nothing changed
    state.client.edit(messageId, content).then((reply) => applyEdit(chatId, messageId, content, reply.at), showError);
    return;
  }
  const original = composing?.mode === 'reply' ? findMessage(chatId, composing.messageId) : null;
  const replyTo = original
    ? { messageId: original.messageId, senderId: original.senderId, quote: original.deleted ? '' : quoteOf(original.content), deleted: original.deleted }
    : null;
  const clientMsgId = crypto.randomUUID();
  const pending = { messageId: 'pending-' + clientMsgId, chatId, senderId: state.userId, content, statuses: {}, replyTo };
  addMessage(chatId, pending);
  const send = { chatId, content, messageType: 'text', clientMsgId };
  if (replyTo) send.replyTo = replyTo.messageId;
  // Offline, it waits (shown pending, …) and goes when the client is back;
  // sent again after a reconnect with its clientMsgId, it is stored once.
  const settled = (reply) => {
    state.messages.get(chatId).delete(pending.messageId);
    if (reply) addMessage(chatId, { ...pending, messageId: reply.messageId, seq: reply.seq, createdAt: reply.createdAt });
    if (chatId === state.current) renderMessages();
  };
  state.client.send(send).then(settled, (error) => {
    showError(error);
    settled(null);
  });
});

if (state.token) {
  try {
    Object.assign(state, readToken(state.token));
    start();
  } catch {
    sessionStorage.clear(); // not ours to fix: show the form
    state.token = null;
  }
}
