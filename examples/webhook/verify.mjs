// Receiving Courier's offline push webhook in Node (docs/operations.md).
// No dependencies. Run as a script (as the tests do), it reads requests as JSON
// lines on stdin, {"headers": {...}, "body": "<raw body, hex>"}, and prints
// `accepted <key>`, `duplicate <key>` or `rejected` for each.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

// True when `header` is `sha256=` + hex HMAC-SHA256 of the raw body bytes.
// Sign and compare bytes as received: parsing and re-serialising the JSON
// changes them, and the signature with them.
export function signatureIsValid(rawBody, header, secret) {
  const expected = Buffer.from('sha256=' + createHmac('sha256', secret).update(rawBody).digest('hex'));
  const received = Buffer.from(String(header ?? ''));
  // Constant time; timingSafeEqual throws on a length difference (not a secret).
  return received.length === expected.length && timingSafeEqual(received, expected);
}

// What a handler does with one request: verify, then parse, then de-duplicate.
// `seen` stands for your database: record the key in the same transaction as
// the work (send the push), and answer 200 to a duplicate without doing it again.
export function handleNotice(rawBody, headers, secret, seen) {
  if (!signatureIsValid(rawBody, headers['x-courier-signature'], secret)) {
    return { outcome: 'rejected' }; // answer 401; Courier does not retry a 4xx
  }
  const notice = JSON.parse(rawBody.toString('utf8'));
  const key = notice.idempotencyKey; // the same as the Idempotency-Key header
  if (seen.has(key)) return { outcome: 'duplicate', key, notice };
  seen.add(key);
  return { outcome: 'accepted', key, notice };
}

// With Express, keep the raw bytes: app.post('/hook', express.raw({ type: 'application/json' }),
//   (req, res) => { const { outcome } = handleNotice(req.body, req.headers, SECRET, seen); … });
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const secret = process.env.PUSH_WEBHOOK_SECRET;
  const seen = new Set();
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    const request = JSON.parse(line);
    const { outcome, key } = handleNotice(Buffer.from(request.body, 'hex'), request.headers, secret, seen);
    console.log(key ? `${outcome} ${key}` : outcome);
  }
}
