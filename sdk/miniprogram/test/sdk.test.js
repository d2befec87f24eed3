// The SDK against a running mvp28 (started by tests/it/sdk.rs with fakes
// for the model and WeChat Pay), through the wx shim. Run with
//   node --test sdk/miniprogram/test/
// and MVP28_BASE_URL (etc., see below) set; without them every test skips.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')

const { createClient, ApiError } = require('../mvp28.js')
const { createWx } = require('./wx-shim.js')

const BASE = process.env.MVP28_BASE_URL
const skip = BASE ? false : 'MVP28_BASE_URL not set (run through cargo test: tests/it/sdk.rs)'
const FREE_DAILY = Number(process.env.MVP28_FREE_DAILY || 5)

function client(name, extra) {
  const wx = createWx({
    loginCode: () => 'dev:' + name,
    appId: process.env.MVP28_APP_ID,
    merchantPublicKey: skip ? null : fs.readFileSync(process.env.MVP28_MERCHANT_PUBLIC_KEY, 'utf8'),
    location: {
      latitude: 31.2304, longitude: 121.4737, speed: -1, accuracy: 35,
      altitude: 12.5, verticalAccuracy: 8, horizontalAccuracy: 35,
    },
  })
  return { wx, api: createClient(Object.assign({ baseUrl: BASE, wx }, extra)) }
}

function b64url(v) {
  return Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')
}

// An HS256 token the server signed once but that has expired.
function expiredToken(userId) {
  const now = Math.floor(Date.now() / 1000)
  const head = b64url({ alg: 'HS256', typ: 'JWT' })
  const body = b64url({ sub: userId, iat: now - 7200, exp: now - 3600, iss: 'mvp28' })
  const sig = crypto.createHmac('sha256', process.env.MVP28_JWT_SECRET)
    .update(head + '.' + body).digest('base64url')
  return head + '.' + body + '.' + sig
}

test('login keeps the token; me, chat continuity, sessions, messages', { skip }, async () => {
  const { wx, api } = client('sdk-basic')
  const auth = await api.login()
  assert.ok(auth.token && auth.user.id)
  assert.equal(wx.getStorageSync('mvp28.auth').token, auth.token)
  const me = await api.me()
  assert.equal(me.user.id, auth.user.id)
  const a = await api.chat('first message')
  const b = await api.chat('second message')
  assert.equal(a.session_id, b.session_id, 'no session id: the conversation continues')
  const c = await api.chat('another topic', { newSession: true })
  assert.notEqual(c.session_id, b.session_id)
  const sessions = await api.sessions({ limit: 10 })
  assert.equal(sessions.items.length, 2)
  const msgs = await api.messages(a.session_id)
  assert.deepEqual(msgs.items.map((m) => m.content), [
    'first message', 'reply to: first message', 'second message', 'reply to: second message'])
  assert.equal(wx.log.filter((r) => r.path === '/api/auth/wechat').length, 1, 'logged in once')
})

test('a stream dropped mid-reply, after multi-unit characters, yields the reply exactly once', { skip }, async () => {
  const { wx, api } = client('sdk-stream')
  // each astral char is two UTF-16 units; the flag is two astral chars
  const text = '😀 你好 🇨🇳 x𝄞y 👍🏽 mañana 中文 🎉 end'
  let drops = 0
  // drop the socket right after deltas ending inside/after surrogate pairs
  wx.dropWhen = (f) => {
    if (drops < 4 && /[\uD800-\uDFFF]/.test(f.text)) { drops += 1; return true }
    return false
  }
  const pieces = []
  let doneSeen = 0
  const reply = await api.chatStream(text, {
    onDelta: (piece, all) => { pieces.push(piece); assert.equal(all, pieces.join('')) },
    onDone: () => { doneSeen += 1 },
    backoffMs: 20,
  })
  // How many deltas carry a surrogate depends on how the server batches
  // text after each reconnect (under load a resume may send the rest at
  // once), so the count of drops is at least one, not exactly four.
  assert.ok(drops >= 1, 'the socket was dropped mid-reply')
  assert.ok(wx.sockets >= drops + 1, 'and reconnected each time')
  assert.equal(reply.message.content, 'reply to: ' + text)
  assert.equal(pieces.join(''), reply.message.content, 'every piece once, in order')
  assert.equal(doneSeen, 1)
  assert.equal(reply.message.status, 'complete')
  // one turn, charged once, however many sockets
  const msgs = await api.messages(reply.session_id)
  assert.equal(msgs.items.filter((m) => m.role === 'user').length, 1)
})

test('an expired token is replaced transparently; one near expiry is refreshed', { skip }, async () => {
  const { wx, api } = client('sdk-expiry')
  const auth = await api.login()
  // expired (the server says 401): log in again once, retry
  wx.setStorageSync('mvp28.auth', Object.assign({}, auth, {
    token: expiredToken(auth.user.id),
    expires_at: new Date(Date.now() + 3600e3).toISOString(),
  }))
  const me = await api.me()
  assert.equal(me.user.id, auth.user.id)
  const statuses = wx.log.filter((r) => r.path === '/api/me').map((r) => r.status)
  assert.deepEqual(statuses, [401, 200])
  assert.equal(wx.log.filter((r) => r.path === '/api/auth/wechat').length, 2)
  assert.notEqual(wx.getStorageSync('mvp28.auth').token, expiredToken(auth.user.id))
  // about to expire: POST /api/auth/refresh first, no new wx.login
  const current = wx.getStorageSync('mvp28.auth')
  wx.setStorageSync('mvp28.auth', Object.assign({}, current, {
    expires_at: new Date(Date.now() + 60e3).toISOString(),
  }))
  await api.me()
  assert.equal(wx.log.filter((r) => r.path === '/api/auth/refresh').length, 1)
  assert.equal(wx.log.filter((r) => r.path === '/api/auth/wechat').length, 2)
  assert.ok(Date.parse(wx.getStorageSync('mvp28.auth').expires_at) > Date.now() + 3600e3)
})

test('a 402 is surfaced with its price and top-up amounts', { skip }, async () => {
  const { api } = client('sdk-broke')
  for (let i = 0; i < FREE_DAILY; i++) await api.chat('free ' + i)
  await assert.rejects(api.chat('one too many'), (e) => {
    assert.ok(e instanceof ApiError)
    assert.equal(e.status, 402)
    assert.equal(e.code, 'quota_exhausted')
    assert.equal(typeof e.price_fen, 'number')
    assert.ok(Array.isArray(e.topup_amounts_fen) && e.topup_amounts_fen.length > 0)
    assert.ok(e.requestId)
    return true
  })
  await assert.rejects(api.chatStream('streamed too'), (e) => e.code === 'quota_exhausted')
})

test('upload through wx.uploadFile to the multipart endpoint', { skip }, async () => {
  const { wx, api } = client('sdk-upload')
  const bytes = Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'), crypto.randomBytes(300000)])
  wx.files.set('wxfile://tmp_42.png', { bytes, name: 'tmp_42.png', type: 'image/png' })
  const media = await api.upload('wxfile://tmp_42.png', { formData: { purpose: 'avatar' } })
  assert.equal(media.content_type, 'image/png')
  assert.equal(media.size, bytes.length)
  assert.ok(media.id && media.url)
  assert.deepEqual(wx.log.filter((r) => r.path === '/api/upload').map((r) => r.status), [200])
  // a type the server refuses comes back as an ApiError
  wx.files.set('wxfile://x.exe', { bytes: Buffer.from('MZ'), name: 'x.exe', type: 'application/x-msdownload' })
  await assert.rejects(api.upload('wxfile://x.exe'), (e) => e.status === 415 && e.code === 'unsupported_media_type')
})

test('reportLocation posts what wx.getLocation returned', { skip }, async () => {
  const { api } = client('sdk-geo')
  const r = await api.reportLocation()
  assert.equal(r.accepted, 1)
  const page = await api.request('GET', '/api/location')
  const p = page.items[0]
  assert.equal(p.coord_type, 'wgs84')
  assert.equal(p.altitude, 12.5)
  assert.equal(p.vertical_accuracy, 8)
  assert.equal(p.speed, null, "WeChat's -1 means unknown")
})

test('topUp: checkout, then wx.requestPayment with params that verify against the merchant key', { skip }, async () => {
  const { wx, api } = client('sdk-pay')
  const order = await api.topUp(600)
  assert.equal(wx.payments.length, 1)
  assert.equal(wx.payments[0].verified, true, 'paySign verifies with the merchant public key')
  assert.match(wx.payments[0].package, /^prepay_id=/)
  assert.equal(order.amount_fen, 600)
  assert.ok(['pending', 'paid'].includes(order.status))
  await assert.rejects(api.topUp(1), (e) => e.status === 422 || e.status === 400)
})
