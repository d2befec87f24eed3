// The wx.* calls the SDK uses, built on Node's fetch, FormData and
// WebSocket, with the behaviour of the real ones where the SDK depends on
// it (callbacks, statusCode, uploadFile's string data, SocketTask).
'use strict'

const crypto = require('node:crypto')

function createWx(o) {
  const storage = new Map()
  const log = [] // every request: {method, path, status}
  const shim = {
    log,
    files: new Map(), // filePath -> {bytes: Buffer, name}
    payments: [], // {verified, params}
    sockets: 0,
    // (frame, socketState) => true to drop the socket right after delivering it
    dropWhen: null,

    getStorageSync(k) { return storage.has(k) ? storage.get(k) : '' },
    setStorageSync(k, v) { storage.set(k, JSON.parse(JSON.stringify(v))) },
    removeStorageSync(k) { storage.delete(k) },

    login({ success }) {
      setImmediate(() => success({ code: o.loginCode(), errMsg: 'login:ok' }))
    },

    request({ url, method = 'GET', data, header = {}, success, fail }) {
      const init = { method, headers: header }
      if (data !== undefined && method !== 'GET') init.body = JSON.stringify(data)
      fetch(url, init).then(async (res) => {
        const text = await res.text()
        let body = text
        try { body = JSON.parse(text) } catch (e) { /* as wx: left a string */ }
        log.push({ method, path: new URL(url).pathname, status: res.status })
        success({ statusCode: res.status, data: body, header: Object.fromEntries(res.headers) })
      }, (e) => fail({ errMsg: 'request:fail ' + e.message }))
    },

    uploadFile({ url, filePath, name, formData = {}, header = {}, success, fail }) {
      const f = shim.files.get(filePath)
      if (!f) { setImmediate(() => fail({ errMsg: 'uploadFile:fail file not found' })); return }
      const form = new FormData()
      for (const k of Object.keys(formData)) form.append(k, String(formData[k]))
      form.append(name, new Blob([f.bytes], { type: f.type || 'application/octet-stream' }), f.name)
      fetch(url, { method: 'POST', headers: header, body: form }).then(async (res) => {
        log.push({ method: 'POST', path: new URL(url).pathname, status: res.status })
        // wx.uploadFile hands back the body as a string
        success({ statusCode: res.status, data: await res.text() })
      }, (e) => fail({ errMsg: 'uploadFile:fail ' + e.message }))
    },

    getLocation({ type = 'wgs84', success }) {
      shim.locationType = type
      setImmediate(() => success(Object.assign({}, o.location, { errMsg: 'getLocation:ok' })))
    },

    // Verifies paySign as the WeChat client does, over
    // appId\ntimeStamp\nnonceStr\npackage\n with the merchant's public key.
    requestPayment({ timeStamp, nonceStr, package: pkg, signType, paySign, success, fail }) {
      const message = `${o.appId}\n${timeStamp}\n${nonceStr}\n${pkg}\n`
      const verified = signType === 'RSA' && crypto.verify(
        'RSA-SHA256', Buffer.from(message), o.merchantPublicKey, Buffer.from(paySign, 'base64'))
      shim.payments.push({ verified, timeStamp, nonceStr, package: pkg })
      setImmediate(() => verified
        ? success({ errMsg: 'requestPayment:ok' })
        : fail({ errMsg: 'requestPayment:fail invalid paySign' }))
    },

    connectSocket({ url }) {
      shim.sockets += 1
      const ws = new WebSocket(url)
      const handlers = { open: [], message: [], close: [], error: [] }
      const state = { deltas: 0, dropped: false }
      const fire = (kind, arg) => handlers[kind].forEach((h) => h(arg))
      ws.onopen = () => fire('open', {})
      ws.onmessage = (ev) => {
        if (state.dropped) return
        fire('message', { data: ev.data })
        let f = null
        try { f = JSON.parse(ev.data) } catch (e) { /* not JSON */ }
        if (f && f.type === 'delta') state.deltas += 1
        if (f && shim.dropWhen && shim.dropWhen(f, state)) {
          // the network goes away: nothing more arrives, then onClose
          state.dropped = true
          ws.close()
          fire('close', { code: 1006, reason: 'abnormal closure' })
        }
      }
      ws.onclose = (ev) => { if (!state.dropped) fire('close', { code: ev.code, reason: ev.reason }) }
      ws.onerror = () => { if (!state.dropped) fire('error', { errMsg: 'socket error' }) }
      return {
        onOpen(h) { handlers.open.push(h) },
        onMessage(h) { handlers.message.push(h) },
        onClose(h) { handlers.close.push(h) },
        onError(h) { handlers.error.push(h) },
        send({ data, success, fail }) {
          try { ws.send(data); if (success) success({}) } catch (e) { if (fail) fail({ errMsg: e.message }) }
        },
        close() { try { ws.close() } catch (e) { /* already closed */ } },
      }
    },
  }
  return shim
}

module.exports = { createWx }
