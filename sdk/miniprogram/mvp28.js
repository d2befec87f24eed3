// mvp28 SDK for WeChat mini-programs: plain JavaScript (CommonJS), no build
// step, no dependencies. See README.md in this directory.
//
//   const { createClient } = require('./mvp28.js')
//   const api = createClient({ baseUrl: 'https://api.example.com' })
//
// Every method returns a Promise. Failures reject with an ApiError carrying
// the server's `code`, the HTTP `status` and the error's extra fields (a 402
// carries `price_fen` and `topup_amounts_fen`).
'use strict'

class ApiError extends Error {
  constructor(status, error) {
    const e = error || {}
    super(e.message || e.code || 'request failed')
    this.name = 'ApiError'
    this.status = status
    for (const k of Object.keys(e)) {
      if (k !== 'message') this[k] = e[k]
    }
    this.code = e.code || 'unknown'
    this.requestId = e.request_id
  }
}

// Calls wx.<name>(args) as a Promise.
function call(wxApi, name, args) {
  return new Promise((resolve, reject) => {
    wxApi[name](Object.assign({}, args, {
      success: resolve,
      fail: (err) => reject(new ApiError(0, {
        code: 'wx_fail',
        message: (err && err.errMsg) || name + ' failed',
        errMsg: err && err.errMsg,
      })),
    }))
  })
}

function randomId() {
  return 'c' + Date.now().toString(36) + Math.random().toString(36).slice(2, 10)
}

function query(params) {
  const parts = []
  for (const k of Object.keys(params || {})) {
    const v = params[k]
    if (v !== undefined && v !== null) parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(v))
  }
  return parts.length ? '?' + parts.join('&') : ''
}

function createClient(options) {
  const opts = options || {}
  const wxApi = opts.wx || (typeof wx !== 'undefined' ? wx : null) // eslint-disable-line no-undef
  if (!wxApi) throw new Error('mvp28: no wx API (pass options.wx)')
  if (!opts.baseUrl) throw new Error('mvp28: options.baseUrl is required')
  const baseUrl = opts.baseUrl.replace(/\/+$/, '')
  const wsUrl = baseUrl.replace(/^http/, 'ws')
  const storageKey = opts.storageKey || 'mvp28.auth'
  // A token with less than this left is refreshed before use.
  const refreshBeforeMs = opts.refreshBeforeMs == null ? 10 * 60 * 1000 : opts.refreshBeforeMs
  const now = opts.now || (() => Date.now())
  let loggingIn = null

  function stored() {
    try {
      const v = wxApi.getStorageSync(storageKey)
      return v && v.token ? v : null
    } catch (e) {
      return null
    }
  }

  function store(auth) {
    wxApi.setStorageSync(storageKey, auth)
    return auth
  }

  function raw(method, path, data, token) {
    const header = { 'content-type': 'application/json' }
    if (token) header.Authorization = 'Bearer ' + token
    return call(wxApi, 'request', {
      url: baseUrl + path,
      method,
      data: data === undefined ? undefined : data,
      header,
    }).then((res) => {
      let body = res.data
      if (typeof body === 'string' && body) {
        try { body = JSON.parse(body) } catch (e) { /* not JSON */ }
      }
      return { status: res.statusCode, body }
    })
  }

  function fail(status, body) {
    return new ApiError(status, (body && body.error) || { code: 'http_' + status, message: 'HTTP ' + status })
  }

  // wx.login -> POST /api/auth/wechat; concurrent callers share one login.
  function login() {
    if (loggingIn) return loggingIn
    loggingIn = call(wxApi, 'login', {})
      .then((r) => raw('POST', '/api/auth/wechat', { code: r.code }))
      .then(({ status, body }) => {
        if (status !== 200) throw fail(status, body)
        return store({ token: body.token, expires_at: body.expires_at, user: body.user })
      })
    const done = () => { loggingIn = null }
    loggingIn.then(done, done)
    return loggingIn
  }

  // A usable token: logs in when there is none or it has expired,
  // refreshes it when it is about to.
  function token() {
    const auth = stored()
    if (!auth) return login().then((a) => a.token)
    const left = Date.parse(auth.expires_at) - now()
    if (!(left > 0)) return login().then((a) => a.token)
    if (left > refreshBeforeMs) return Promise.resolve(auth.token)
    return raw('POST', '/api/auth/refresh', undefined, auth.token).then(({ status, body }) => {
      if (status === 200) return store({ token: body.token, expires_at: body.expires_at, user: body.user }).token
      return login().then((a) => a.token)
    })
  }

  // An authenticated JSON request; a 401 logs in again once and retries.
  function request(method, path, data) {
    const attempt = (retried) => token()
      .then((t) => raw(method, path, data, t))
      .then(({ status, body }) => {
        if (status === 401 && !retried) {
          wxApi.removeStorageSync(storageKey)
          return attempt(true)
        }
        if (status >= 400 || status === 0) throw fail(status, body)
        return status === 204 ? null : body
      })
    return attempt(false)
  }

  function chatBody(text, o) {
    const body = { message: text }
    if (o.sessionId) body.session_id = o.sessionId
    if (o.newSession) body.new_session = true
    if (o.model) body.model = o.model
    if (o.attachments) body.attachments = o.attachments
    body.client_msg_id = o.clientMsgId || randomId()
    return body
  }

  // POST /api/chat: the whole reply at once. Retried requests carry the same
  // client_msg_id, so they are never charged twice.
  function chat(text, o) {
    return request('POST', '/api/chat', chatBody(text, o || {}))
  }

  // The reply over the WebSocket (GET /api/chat/stream), delta by delta.
  // A dropped socket reconnects and resumes at the text already received
  // (offsets are UTF-16 code units, i.e. text.length), so every piece of
  // text reaches onDelta exactly once. Resolves with the stored reply.
  function chatStream(text, o) {
    o = o || {}
    const body = chatBody(text, o)
    const maxReconnects = o.maxReconnects == null ? 5 : o.maxReconnects
    const backoffMs = o.backoffMs == null ? 200 : o.backoffMs
    let messageId = null
    let received = ''
    let reconnects = 0
    let reauthed = false
    let settled = false
    return new Promise((resolve, reject) => {
      const finish = (err, reply) => {
        if (settled) return
        settled = true
        if (err) {
          if (o.onError) o.onError(err)
          reject(err)
        } else {
          if (o.onDone) o.onDone(reply)
          resolve(reply)
        }
      }
      const retry = (why) => {
        if (settled) return
        if (reconnects >= maxReconnects) {
          finish(new ApiError(0, { code: 'connection_lost', message: 'the stream was lost: ' + why }))
          return
        }
        reconnects += 1
        setTimeout(open, backoffMs * reconnects)
      }
      const open = () => token().then((t) => {
        if (settled) return
        let closed = false
        const task = wxApi.connectSocket({
          url: wsUrl + '/api/chat/stream?token=' + encodeURIComponent(t),
          header: { Authorization: 'Bearer ' + t },
        })
        const lost = (why) => {
          if (closed) return
          closed = true
          retry(why)
        }
        task.onOpen(() => {
          const frame = messageId
            ? { type: 'resume', message_id: messageId, offset: received.length }
            // Before the first delta the message id is unknown: the same
            // client_msg_id finds the turn already started (never twice).
            : Object.assign({ type: 'chat' }, body)
          task.send({ data: JSON.stringify(frame) })
        })
        task.onMessage((m) => {
          let f
          try { f = JSON.parse(m.data) } catch (e) { return }
          if (f.type === 'delta') {
            messageId = f.message_id
            const end = f.offset + f.text.length
            if (end <= received.length) return // already have it
            if (f.offset > received.length) { // a gap: ask again from what we hold
              closed = true
              task.close({})
              retry('gap')
              return
            }
            const piece = f.text.slice(received.length - f.offset)
            received += piece
            if (o.onDelta) o.onDelta(piece, received)
          } else if (f.type === 'done') {
            closed = true
            task.close({})
            finish(null, f)
          } else if (f.type === 'error') {
            closed = true
            task.close({})
            const err = new ApiError(0, f.error)
            if (err.code === 'unauthorized' && !reauthed) {
              reauthed = true
              wxApi.removeStorageSync(storageKey)
              retry('unauthorized')
            } else {
              finish(err)
            }
          }
        })
        task.onClose(() => lost('closed'))
        task.onError((e) => lost((e && e.errMsg) || 'socket error'))
      }, (err) => finish(err))
      open()
    })
  }

  // wx.uploadFile to POST /api/upload (multipart, part `file`) -> media.
  function upload(filePath, o) {
    o = o || {}
    const attempt = (retried) => token().then((t) => call(wxApi, 'uploadFile', {
      url: baseUrl + '/api/upload',
      filePath,
      name: 'file',
      formData: o.formData || {},
      header: { Authorization: 'Bearer ' + t },
    })).then((res) => {
      let body = res.data
      if (typeof body === 'string') {
        try { body = JSON.parse(body) } catch (e) { body = null }
      }
      if (res.statusCode === 401 && !retried) {
        wxApi.removeStorageSync(storageKey)
        return attempt(true)
      }
      if (res.statusCode !== 200) throw fail(res.statusCode, body)
      return body.media
    })
    return attempt(false)
  }

  // wx.getLocation -> POST /api/location/report, the result posted as it is.
  function reportLocation(o) {
    o = o || {}
    const type = o.type || 'wgs84'
    return call(wxApi, 'getLocation', { type }).then((loc) => {
      const point = Object.assign({}, loc, { coord_type: type })
      return request('POST', '/api/location/report', point)
    })
  }

  // POST /api/pay/checkout -> wx.requestPayment -> the order's status.
  function topUp(amountFen) {
    return request('POST', '/api/pay/checkout', { amount_fen: amountFen }).then((order) => {
      const p = order.pay_params
      return call(wxApi, 'requestPayment', {
        timeStamp: p.timeStamp,
        nonceStr: p.nonceStr,
        package: p.package,
        signType: p.signType,
        paySign: p.paySign,
      }).then(
        () => request('GET', '/api/pay/orders/' + encodeURIComponent(order.out_trade_no)),
        (err) => {
          const cancelled = /cancel/.test(err.errMsg || '')
          throw new ApiError(0, {
            code: cancelled ? 'payment_cancelled' : 'payment_failed',
            message: err.errMsg || 'payment failed',
            out_trade_no: order.out_trade_no,
          })
        },
      )
    })
  }

  return {
    login,
    logout() { wxApi.removeStorageSync(storageKey) },
    request,
    chat,
    chatStream,
    upload,
    reportLocation,
    topUp,
    me() { return request('GET', '/api/me') },
    sessions(q) { return request('GET', '/api/sessions' + query(q)) },
    messages(sessionId, q) {
      return request('GET', '/api/sessions/' + encodeURIComponent(sessionId) + '/messages' + query(q))
    },
  }
}

module.exports = { createClient, ApiError }
