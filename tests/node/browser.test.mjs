// The web page at / in Debian's Chromium, driven by playwright-core: B is
// offline, A sends three messages, B opens the page and sees them in order,
// and A's ticks turn ✓✓ delivered, then read. Then two windows where typing,
// a reply, an edit, reactions and a delete show up in the other one; the
// same page on a phone, pasted tokens that are malformed or refused, and
// signing out while the page is reconnecting. The page runs on /ws through
// clients/js; last, the minimal frontend of clients/js/README.md, served as
// that README says, works as written. Screenshots go to
// SCREENSHOT_DIR (docs/). Needs a running api (--dev-tokens) + worker at
// COURIER_URL.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { URL, DEADLINE_MS, createChat, rest } from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR;
// Each run has a database of its own (tests/tests/socketio.rs); COURIER_TAG
// keeps runs apart against a long-lived server.
const TAG = process.env.COURIER_TAG ?? '';
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
});
after(async () => {
  await browser?.close();
});

/// A dev token with a display name of our choosing (lib.mjs's `token` names
/// everyone "<id> name").
async function devToken(userId, name) {
  const res = await fetch(`${URL}/api/dev/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId, name }),
  });
  assert.equal(res.status, 200, `dev token for ${userId}`);
  return (await res.json()).token;
}

/// Collects what must never happen in `context`: uncaught page errors, and
/// responses of 400 and up (a missing /favicon.ico was one). Not the 401 of
/// `GET /api/devices` after a refused connection: a browser cannot read why
/// a WebSocket handshake failed, so the client asks REST with the same token,
/// and a refused token gets its 401 there, by design.
/// Failed requests only count for the favicon: closing a page aborts requests.
function watch(context) {
  const problems = [];
  context.on('weberror', (error) => problems.push(`page error: ${error.error()}`));
  context.on('response', (res) => {
    const probe = res.status() === 401 && new globalThis.URL(res.url()).pathname === '/api/devices';
    if (res.status() >= 400 && !probe) {
      problems.push(`${res.status()} ${res.request().method()} ${res.url()}`);
    }
  });
  context.on('requestfailed', (req) => {
    if (/favicon/.test(req.url())) problems.push(`failed ${req.url()}: ${req.failure()?.errorText}`);
  });
  return problems;
}

async function newPage(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  return page;
}

async function signIn(context, userId, name, link = null) {
  const page = await newPage(context);
  if (link) await routeSocket(page, link);
  await page.goto(URL);
  await page.fill('#signin-user', userId);
  await page.fill('#signin-name', name);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForFunction(() => window.state?.client?.connected && document.getElementById('banner').hidden);
  return page;
}

/// A switch between a page and the server: while `away`, each new /ws
/// connection of the page is closed at once (the server is out of reach);
/// otherwise it is passed on.
function socketLink() {
  return { away: false, waiters: [] };
}

/// Resolves when `link` next closes a connection; fails after DEADLINE_MS.
function refusal(link) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no connection attempt reached the cut')), DEADLINE_MS);
    link.waiters.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/// Routes the page's /ws connections through `link`. Must be installed before
/// the page loads (signIn does): Playwright swaps the page's WebSocket class
/// when the first route is added, and the client keeps the class it found when
/// it started, so a route added later never sees its sockets.
async function routeSocket(page, link) {
  await page.routeWebSocket(/\/ws\?/, (ws) => {
    if (!link.away) return ws.connectToServer();
    ws.close();
    for (const wake of link.waiters.splice(0)) wake();
  });
}

/// Waits until A's own messages show `status` (all of them, `count` in all).
function ticks(page, status, count) {
  return page.waitForFunction(
    ([status, count]) => {
      const mine = [...document.querySelectorAll('.msg.mine')];
      return mine.length === count && mine.every((m) => m.dataset.status === status);
    },
    [status, count],
  );
}

/// Waits until the sign-in form's error matches `pattern`; returns the text.
async function signinError(page, pattern) {
  await page.waitForFunction(
    ([source, flags]) => new RegExp(source, flags).test(document.getElementById('signin-error').textContent),
    [pattern.source, pattern.flags],
  );
  assert.ok(await page.isVisible('#signin-error'));
  return page.textContent('#signin-error');
}

/// The icon is inline (no request to /favicon.ico), and an image that decodes.
async function assertFavicon(page) {
  const href = await page.getAttribute('link[rel=icon]', 'href');
  assert.match(href, /^data:image\/svg\+xml,/);
  const decoded = await page.evaluate(async (href) => {
    const image = new Image();
    image.src = href;
    await image.decode();
    return image.naturalWidth > 0;
  }, href);
  assert.ok(decoded, 'the favicon decodes');
}

/// Cuts the page off from the server through `link` (every new /ws
/// connection fails, as when it is out of reach), drops the socket, and signs
/// out under the reconnecting banner: the link is below it, not under it, and
/// takes the click.
async function signOutWhileReconnecting(page, link) {
  // Connected first: a connection attempt already under way when the cut
  // below is made (the client still backing off from an earlier cut) would
  // reach the server, and its session:ready hides the banner.
  await page.waitForFunction(() => state.client?.state === 'open');
  link.away = true;
  const refused = refusal(link);
  await page.evaluate(() => state.client.reconnect());
  // The page tried again and was turned away: the cut is in effect.
  await refused;
  // Both boxes read in one go in the page, once the banner shows: read one
  // after the other, from here, they once straddled a change of the page.
  const boxes = await (await page.waitForFunction(() => {
    const [banner, signout] = ['banner', 'signout'].map((id) => document.getElementById(id));
    if (banner.hidden || !banner.offsetParent || !signout.offsetParent) return null;
    const box = (element) => { const { x, y, width, height } = element.getBoundingClientRect(); return { x, y, width, height }; };
    return { banner: box(banner), signout: box(signout), client: state.client.state };
  })).jsonValue();
  const { banner, signout } = boxes;
  assert.ok(signout.y >= banner.y + banner.height, `sign out ${JSON.stringify(signout)} is clear of the banner ${JSON.stringify(banner)}`);
  assert.notEqual(boxes.client, 'open', 'the client is reconnecting, not connected');
  const hit = await page.evaluate(() => {
    const box = document.getElementById('signout').getBoundingClientRect();
    return document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2)?.id;
  });
  assert.equal(hit, 'signout', 'a click on sign out reaches it');
  // If the banner went away, say what the page shows instead (a connection
  // that got through, or the client stopped for good, with its reason).
  const now = await page.evaluate(() => ({
    banner: !document.getElementById('banner').hidden,
    signin: !document.getElementById('signin').hidden,
    client: state.client?.state ?? null,
    signinError: document.getElementById('signin-error').textContent,
  }));
  assert.ok(now.banner, `still reconnecting: ${JSON.stringify(now)}`);
  await page.click('#signout'); // playwright also checks that nothing covers it
  await page.waitForSelector('#signin:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('courier.token')), null);
}

test('offline B sees three messages in order; A sees delivered, then read', async () => {
  const [alice, bob] = [`alice${TAG}`, `bob${TAG}`];
  const size = { viewport: { width: 920, height: 540 } };
  const [contextA, contextB] = [await browser.newContext(size), await browser.newContext(size)];
  const problems = [watch(contextA), watch(contextB)];

  // B has used Courier before, and is offline now (page closed).
  const bobFirst = await signIn(contextB, bob, 'Bob');
  await bobFirst.close();

  const [linkA, linkB] = [socketLink(), socketLink()];
  const pageA = await signIn(contextA, alice, 'Alice', linkA);
  // The header names the user (the token's `name`); the id is on hover.
  assert.equal(await pageA.textContent('#me'), 'Alice');
  assert.equal(await pageA.getAttribute('#me', 'title'), alice);
  await assertFavicon(pageA);
  await pageA.fill('#new-chat-members', bob);
  await pageA.click('#new-chat button[type=submit]');
  await pageA.waitForSelector('#composer:not([hidden])');
  await pageA.waitForFunction(() => /last seen|offline/.test(document.querySelector('#chat-header .presence').textContent));
  // On a wide screen the list stays beside the chat, and there is no "‹ Chats".
  assert.ok(await pageA.isVisible('.sidebar'));
  assert.equal(await pageA.isVisible('#back'), false);
  const texts = ['Hi Bob!', 'Are you there?', 'Call me when you are back.'];
  for (const text of texts) {
    await pageA.fill('#composer-text', text);
    await pageA.press('#composer-text', 'Enter');
  }
  await ticks(pageA, 'sent', 3);
  assert.equal(await pageA.locator('.msg.mine .tick').first().textContent(), '✓');

  // B comes online: the page receives and acknowledges the backlog.
  const pageB = await signIn(contextB, bob, 'Bob', linkB);
  await ticks(pageA, 'delivered', 3);
  assert.equal(await pageA.locator('.msg.mine .tick').first().textContent(), '✓✓');
  await pageA.waitForSelector('.chat .dot.online');
  await pageB.waitForFunction(() => document.querySelector('.chat .unread')?.textContent === '3');

  // B opens the chat: the three messages, in order; A sees them read.
  await pageB.click('.chat');
  await pageB.waitForFunction(() => document.querySelectorAll('.msg').length === 3);
  assert.deepEqual(await pageB.locator('.msg .text').allTextContents(), texts);
  await ticks(pageA, 'read', 3);
  await pageB.waitForFunction(() => document.querySelector('.chat .unread')?.textContent === '');

  // B answers; it shows up live in A's open chat.
  await pageB.fill('#composer-text', 'Back now!');
  await pageB.press('#composer-text', 'Enter');
  await pageA.waitForFunction(() => [...document.querySelectorAll('.msg:not(.mine) .text')].some((m) => m.textContent === 'Back now!'));

  if (SHOTS) {
    await pageA.screenshot({ path: path.join(SHOTS, 'screenshot-a.png') });
    await pageB.screenshot({ path: path.join(SHOTS, 'screenshot-b.png') });
  }

  // The socket drops and the server is out of reach for a while: the page
  // says so, reconnects by itself once it is back, and says so again.
  linkB.away = true;
  const refused = refusal(linkB);
  await pageB.evaluate(() => state.client.reconnect());
  await pageB.waitForSelector('#banner:not([hidden])');
  await refused;
  assert.ok(await pageB.isVisible('#banner'), 'a refused connection leaves the banner up');
  linkB.away = false;
  await pageB.waitForSelector('#banner[hidden]', { state: 'attached' });

  // A's server is out of reach: A can still sign out.
  await signOutWhileReconnecting(pageA, linkA);
  assert.deepEqual(problems.flat(), []);
  await contextA.close();
  await contextB.close();
});

/// The list item of a message.
const messageAt = (id) => `.msg[data-message-id="${id}"]`;

/// Clicks one of a message's actions (react, reply, edit, delete), selecting
/// the message first (a click on it shows them) unless it is selected.
async function act(page, messageId, action, emoji) {
  const item = page.locator(messageAt(messageId));
  if (!(await item.evaluate((el) => el.classList.contains('selected')))) await item.locator('.text').click();
  await item.locator(`.action[data-action="${action}"]${emoji ? `[data-emoji="${emoji}"]` : ''}`).click();
}

/// Waits until the open chat's typing line reads `text` ('' : hidden).
function typingLine(page, text) {
  return page.waitForFunction((text) => {
    const line = document.getElementById('typing');
    return text ? !line.hidden && line.textContent === text : line.hidden;
  }, text);
}

/// Waits until a message's chip for `emoji` shows `count` (0: no chip), and whether it is the user's own.
function chip(page, messageId, emoji, count, mine) {
  return page.waitForFunction(([selector, emoji, count, mine]) => {
    const chip = document.querySelector(`${selector} .reaction[data-emoji="${emoji}"]`);
    if (count === 0) return document.querySelector(selector) && !chip;
    return chip?.querySelector('.count').textContent === String(count) && chip.classList.contains('mine') === mine;
  }, [messageAt(messageId), emoji, count, mine]);
}

test('two windows: typing, a reply, an edit, reactions and a delete show up in the other one', async () => {
  const [frank, grace] = [`frank${TAG}`, `grace${TAG}`];
  const size = { viewport: { width: 920, height: 600 } };
  const [contextA, contextB] = [await browser.newContext(size), await browser.newContext(size)];
  const problems = [watch(contextA), watch(contextB)];
  const pageA = await signIn(contextA, frank, 'Frank');
  const pageB = await signIn(contextB, grace, 'Grace');

  // Frank starts the chat and writes; Grace opens it.
  await pageA.fill('#new-chat-members', grace);
  await pageA.click('#new-chat button[type=submit]');
  await pageA.waitForSelector('#composer:not([hidden])');
  await pageA.fill('#composer-text', 'Lunch at 12:30?');
  await pageA.press('#composer-text', 'Enter');
  await pageA.waitForSelector('.msg.mine.actionable'); // stored: it has its id and seq
  const lunch = await pageA.getAttribute('.msg.mine', 'data-message-id');
  await pageB.click('.chat');
  await pageB.waitForSelector(messageAt(lunch));

  // Typing: Grace types, Frank sees it; she leaves the field and it goes.
  await pageB.fill('#composer-text', 'Sure');
  await typingLine(pageA, 'Grace is typing…');
  await pageB.locator('#composer-text').blur();
  await typingLine(pageA, '');

  // A reply: Grace answers Frank's message; both windows quote it. Sending stops her typing.
  await act(pageB, lunch, 'reply');
  await pageB.waitForSelector('#composer-context:not([hidden])');
  assert.equal(await pageB.textContent('#composer-context .label'), 'Replying to Frank: Lunch at 12:30?');
  await pageB.fill('#composer-text', '13:00 suits me better');
  await typingLine(pageA, 'Grace is typing…');
  await pageB.press('#composer-text', 'Enter');
  await pageB.waitForSelector('#composer-context', { state: 'hidden' });
  await pageA.waitForFunction(() => document.querySelector('.msg:not(.mine) .text')?.textContent === '13:00 suits me better');
  await typingLine(pageA, '');
  const reply = await pageA.getAttribute('.msg:not(.mine)', 'data-message-id');
  for (const page of [pageA, pageB]) {
    await page.waitForFunction((selector) => document.querySelector(`${selector}.actionable .quote-text`)?.textContent === 'Lunch at 12:30?', messageAt(reply));
  }

  // An edit: Frank corrects his message; Grace sees the new text, marked edited, and her reply's quote follows.
  await act(pageA, lunch, 'edit');
  assert.equal(await pageA.inputValue('#composer-text'), 'Lunch at 12:30?');
  assert.equal(await pageA.textContent('#composer button[type=submit]'), 'Save');
  await pageA.fill('#composer-text', 'Lunch at 13:00?');
  await pageA.press('#composer-text', 'Enter');
  await pageB.waitForFunction((selector) => {
    const item = document.querySelector(selector);
    return item?.querySelector('.text').textContent === 'Lunch at 13:00?' && item.querySelector('.edited');
  }, messageAt(lunch));
  await pageB.waitForFunction((selector) => document.querySelector(`${selector} .quote-text`)?.textContent === 'Lunch at 13:00?', messageAt(reply));
  assert.equal(await pageA.textContent(`${messageAt(lunch)} .text`), 'Lunch at 13:00?');
  assert.equal(await pageA.inputValue('#composer-text'), '');

  // Reactions: Grace 👍 Frank's message, he adds his, she takes hers back; each window follows.
  await act(pageB, lunch, 'react', '👍');
  await chip(pageB, lunch, '👍', 1, true);
  await chip(pageA, lunch, '👍', 1, false);
  await pageA.click(`${messageAt(lunch)} .reaction[data-emoji="👍"]`);
  await chip(pageA, lunch, '👍', 2, true);
  await chip(pageB, lunch, '👍', 2, true);
  await act(pageB, reply, 'react', '🎉');
  await chip(pageA, reply, '🎉', 1, false);
  await pageB.click(`${messageAt(lunch)} .reaction[data-emoji="👍"]`);
  await chip(pageB, lunch, '👍', 1, false);
  await chip(pageA, lunch, '👍', 1, true);
  if (SHOTS) {
    await pageA.screenshot({ path: path.join(SHOTS, 'screenshot-entries-a.png') });
    await pageB.screenshot({ path: path.join(SHOTS, 'screenshot-entries-b.png') });
  }

  // A delete for everyone (after a confirm): a tombstone in both windows, without
  // its reactions, and the reply's quote says so.
  pageA.once('dialog', (dialog) => dialog.accept());
  await act(pageA, lunch, 'delete');
  for (const page of [pageB, pageA]) {
    await page.waitForFunction((selector) => {
      const item = document.querySelector(selector);
      return item?.classList.contains('deleted') && item.querySelector('.text').textContent === 'This message was deleted' && !item.querySelector('.reactions, .actions');
    }, messageAt(lunch));
    await page.waitForFunction((selector) => document.querySelector(`${selector} .quote-text`)?.textContent === 'deleted message', messageAt(reply));
  }
  await chip(pageA, reply, '🎉', 1, false); // the reply keeps its own

  // A typing:start never followed by a stop (a laptop closed mid-word) hides by itself after expiresInMs.
  await pageA.evaluate(() => state.client.startTyping(state.current));
  await typingLine(pageB, 'Frank is typing…');
  const shown = Date.now();
  await typingLine(pageB, '');
  assert.ok(Date.now() - shown > 4000, `the indicator went after ${Date.now() - shown} ms, before its 6 s`);

  // Grace's history after a reload shows the same: the tombstone, the reply's quote of it, her reaction.
  await pageB.reload();
  await pageB.waitForSelector('#app:not([hidden])');
  await pageB.click('.chat');
  await pageB.waitForSelector(`${messageAt(lunch)}.deleted`);
  assert.equal(await pageB.textContent(`${messageAt(reply)} .quote-text`), 'deleted message');
  await chip(pageB, reply, '🎉', 1, true);
  assert.deepEqual(problems.flat(), []);
  await contextA.close();
  await contextB.close();
});

test('on a phone (390×844) the chat list, then the open chat, take the whole width', async () => {
  const [carol, dave] = [`carol${TAG}`, `dave${TAG}`];
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const problems = watch(context);

  // Dave has written to Carol from elsewhere.
  const daveToken = await devToken(dave, 'Dave');
  const chatId = await createChat(daveToken, 'direct', [carol]);
  const sent = await rest(daveToken, 'POST', `/chats/${chatId}/messages`, { content: 'Hi Carol! Free for lunch today?' });
  assert.ok(sent.status < 300, `send: ${sent.status} ${JSON.stringify(sent.body)}`);

  const link = socketLink();
  const page = await signIn(context, carol, 'Carol', link);
  assert.equal(await page.textContent('#me'), 'Carol');
  await page.waitForFunction(() => document.querySelector('.chat .unread')?.textContent === '1');

  // No chat open: the list fills the screen, the (empty) conversation is not squeezed in beside it.
  const list = await page.locator('.sidebar').boundingBox();
  assert.ok(list.width >= 380, `the chat list is ${list.width}px wide`);
  assert.equal(await page.isVisible('.conversation'), false);

  // A chat open: it replaces the list, full width; the sign-in line stays on top.
  await page.click('.chat');
  await page.waitForFunction(() => document.querySelectorAll('.msg').length === 1);
  const conversation = await page.locator('.conversation').boundingBox();
  assert.ok(conversation.width >= 300, `the conversation is ${conversation.width}px wide`);
  assert.equal(await page.isVisible('.sidebar'), false);
  assert.ok(await page.isVisible('#signout'));
  assert.ok(await page.isVisible('#back'));
  await page.fill('#composer-text', 'Sure, 12:30 at the usual place?');
  await page.press('#composer-text', 'Enter');
  await ticks(page, 'sent', 1);
  const composer = await page.locator('#composer').boundingBox();
  assert.ok(composer.y + composer.height <= 844 && composer.width >= 380, `the composer ${JSON.stringify(composer)} is on screen, full width`);
  // Nothing is wider than the screen (no sideways scrolling).
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth), 390);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'screenshot-phone.png') });

  // "‹ Chats" goes back to the list; nothing is open, so the chat is not marked read meanwhile.
  await page.click('#back');
  await page.waitForSelector('.sidebar', { state: 'visible' });
  assert.equal(await page.isVisible('.conversation'), false);
  assert.equal(await page.evaluate(() => state.current), null);

  await page.click('.chat');
  await page.waitForSelector('.conversation', { state: 'visible' });
  await assertFavicon(page);
  await signOutWhileReconnecting(page, link);
  assert.deepEqual(problems, []);
  await context.close();
});

test('a malformed token gets a clear message, a refused one the server\'s reason; then a good one signs in', async () => {
  const erin = `erin${TAG}`;
  const context = await browser.newContext();
  const problems = watch(context);
  const page = await newPage(context);
  await page.goto(URL);
  await page.click('#signin-form details summary');

  // Each message differs from the one before, so each wait sees a new one.
  const malformed = [
    ['hello, this is not a token', /^That is not a valid token: .*three parts separated by dots/],
    ['eyJhbGciOiJIUzI1NiJ9.%%%not base64%%%.c2ln', /^That is not a valid token: .*not base64url-encoded JSON/],
    ['eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJlcmluIn0', /^That is not a valid token: .*three parts separated by dots/], // cut short
    ['eyJhbGciOiJIUzI1NiJ9.e30.c2ln', /^That is not a valid token: it names no user/], // {} has no sub
  ];
  for (const [pasted, message] of malformed) {
    await page.fill('#signin-token', pasted);
    await page.click('#signin-form button[type=submit]');
    await signinError(page, message);
    assert.ok(await page.isVisible('#signin'));
    assert.equal(await page.isVisible('#app'), false);
  }

  // Well-formed, but not signed by this server: the server's reason.
  const good = await devToken(erin, 'Erin Example');
  const [header, payload] = good.split('.');
  await page.fill('#signin-token', `${header}.${payload}.${'A'.repeat(43)}`);
  await page.click('#signin-form button[type=submit]');
  await signinError(page, /^The server refused the token: token signature is invalid\.$/);
  await page.waitForSelector('#signin', { state: 'visible' });
  assert.equal(await page.isVisible('#app'), false);
  assert.equal(await page.isVisible('#banner'), false);

  // The form still works: a good token (pasted as a header value) signs in, under its name.
  await page.fill('#signin-token', `Bearer ${good}`);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForFunction(() => document.getElementById('banner').hidden && state.client?.connected);
  assert.equal(await page.textContent('#me'), 'Erin Example');
  assert.equal(await page.textContent('#signin-error'), '');
  assert.deepEqual(problems, []);
  await context.close();
});

/// The minimal frontend of clients/js/README.md, served as it says: the
/// file, with clients/js/dist beside it as courier/, from an origin of its
/// own (README_PAGE_PORT, which the api's CORS_ALLOW_ORIGINS names).
async function serveReadmeFrontend(port) {
  const client = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../clients/js');
  const readme = await readFile(path.join(client, 'README.md'), 'utf8');
  const page = readme.match(/## A complete minimal frontend[\s\S]*?```html\n([\s\S]*?)```/)?.[1];
  assert.ok(page, 'the README has the frontend');
  const server = http.createServer(async (req, res) => {
    const { pathname } = new globalThis.URL(req.url, 'http://localhost');
    try {
      if (pathname === '/index.html') return res.writeHead(200, { 'content-type': 'text/html' }).end(page);
      const module = pathname.match(/^\/courier\/([a-z]+\.js)$/)?.[1];
      if (module) return res.writeHead(200, { 'content-type': 'text/javascript' }).end(await readFile(path.join(client, 'dist', module)));
    } catch {}
    res.writeHead(404).end();
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return server;
}

const README_PAGE_PORT = process.env.README_PAGE_PORT;

test('the minimal frontend of clients/js/README.md works as written', { skip: !README_PAGE_PORT && 'README_PAGE_PORT is not set' }, async () => {
  const [ann, ben] = [`ann${TAG}`, `ben${TAG}`];
  const server = await serveReadmeFrontend(Number(README_PAGE_PORT));
  const context = await browser.newContext();
  const problems = watch(context);
  const open = async (me, peer) => {
    const page = await newPage(context);
    await page.goto(`http://127.0.0.1:${README_PAGE_PORT}/index.html?me=${me}&peer=${peer}&server=${encodeURIComponent(URL)}`);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'online');
    return page;
  };
  const pageA = await open(ann, ben);
  const pageB = await open(ben, ann);
  const lines = (page) => page.locator('#messages li').allTextContents();

  // Ann writes; Ben's window shows it (and reads it): Ann's tick turns read.
  await pageA.fill('#text', 'Hello Ben');
  await pageA.press('#text', 'Enter');
  await pageB.waitForFunction((line) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.trim() === line), `${ann}: Hello Ben`);
  await pageA.waitForFunction((line) => document.querySelector('#messages li')?.textContent === line, `${ann}: Hello Ben ✓✓ read`);

  // Ben types, then answers: Ann sees both.
  await pageB.fill('#text', 'Hi');
  await pageA.waitForFunction((text) => document.getElementById('status').textContent === text, `${ben} is typing…`);
  await pageB.fill('#text', 'Hi Ann');
  await pageB.press('#text', 'Enter');
  await pageA.waitForFunction(() => document.querySelectorAll('#messages li').length === 2);
  assert.deepEqual((await lines(pageA)).map((line) => line.trim()), [`${ann}: Hello Ben ✓✓ read`, `${ben}: Hi Ann`]);

  // A reload shows the same history, from REST.
  await pageB.reload();
  await pageB.waitForFunction(() => document.getElementById('status').textContent === 'online');
  assert.deepEqual((await lines(pageB)).map((line) => line.trim()), [`${ann}: Hello Ben`, `${ben}: Hi Ann ✓`]);
  assert.deepEqual(problems, []);
  await context.close();
  server.close();
});
