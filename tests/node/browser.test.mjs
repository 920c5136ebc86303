// The web page at / in Debian's Chromium, driven by playwright-core: B is
// offline, A sends three messages, B opens the page and sees them in order,
// and A's ticks turn ✓✓ delivered, then read. Screenshots of both windows go
// to SCREENSHOT_DIR (docs/). Needs a running api (--dev-tokens) + worker at COURIER_URL.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { URL, DEADLINE_MS } from './lib.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR;
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
});
after(async () => {
  await browser?.close();
});

async function signIn(context, userId, name) {
  const page = await context.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  await page.goto(URL);
  await page.fill('#signin-user', userId);
  await page.fill('#signin-name', name);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForFunction(() => window.io && document.getElementById('banner').hidden);
  return page;
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

test('offline B sees three messages in order; A sees delivered, then read', async () => {
  // Each run has a database of its own (tests/tests/socketio.rs); COURIER_TAG
  // keeps runs apart against a long-lived server.
  const tag = process.env.COURIER_TAG ?? '';
  const [alice, bob] = [`alice${tag}`, `bob${tag}`];
  const size = { viewport: { width: 920, height: 540 } };
  const [contextA, contextB] = [await browser.newContext(size), await browser.newContext(size)];

  // B has used Courier before, and is offline now (page closed).
  const bobFirst = await signIn(contextB, bob, 'Bob');
  await bobFirst.close();

  const pageA = await signIn(contextA, alice, 'Alice');
  await pageA.fill('#new-chat-members', bob);
  await pageA.click('#new-chat button[type=submit]');
  await pageA.waitForSelector('#composer:not([hidden])');
  await pageA.waitForFunction(() => /last seen|offline/.test(document.querySelector('#chat-header .presence').textContent));
  const texts = ['Hi Bob!', 'Are you there?', 'Call me when you are back.'];
  for (const text of texts) {
    await pageA.fill('#composer-text', text);
    await pageA.press('#composer-text', 'Enter');
  }
  await ticks(pageA, 'sent', 3);
  assert.equal(await pageA.locator('.msg.mine .tick').first().textContent(), '✓');

  // B comes online: the page receives and acknowledges the backlog.
  const pageB = await signIn(contextB, bob, 'Bob');
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

  // The socket drops: the page says so, reconnects by itself, and says so again.
  await pageB.evaluate(() => state.socket.io.engine.close());
  await pageB.waitForSelector('#banner:not([hidden])');
  await pageB.waitForSelector('#banner[hidden]', { state: 'attached' });
  await contextA.close();
  await contextB.close();
});

test('a refused token shows the reason on the sign-in form', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(DEADLINE_MS);
  await page.goto(URL);
  await page.click('#signin-form details summary');
  await page.fill('#signin-token', 'e30.eyJzdWIiOiJ4In0.bad');
  await page.click('#signin-form button[type=submit]');
  await page.waitForFunction(() => /^unauthorized/.test(document.getElementById('signin-error').textContent));
  await context.close();
});
