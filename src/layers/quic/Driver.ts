/**
 * A lean QUIC driver over quiche — the native binding that ships inside @matrixai/quic — replacing the library's
 * JavaScript layer, which cost milliseconds of CPU per stream and could lose a stream's FIN (issue #14).
 *
 * quiche does the protocol (RFC 9000, TLS 1.3 via BoringSSL, loss recovery, flow control, ALPN); this module only
 * moves datagrams and wakes waiters:
 * - One `dgram` socket per endpoint (all its connections) or per client connection (connected, so sends skip the
 *   address lookup). A received datagram is routed by its destination connection id.
 * - Per connection: one timer (quiche's next deadline; re-armed only when the deadline moves earlier), one
 *   keep-alive interval, and one flush per event-loop turn (`setImmediate`) that drains `conn.send` into slices of
 *   a shared send buffer, so many stream writes in a turn leave as few datagrams.
 * - Streams are plain objects: a read pulls from quiche on demand and waits only when quiche has nothing; after
 *   each received datagram only the streams quiche reports readable, plus the writers that are waiting for
 *   window, are looked at. Wake-ups are level-triggered (a waiter re-checks quiche), so none can be lost.
 * - Closing never builds an Error: states are flags, failures are `StreamFailure` values.
 *
 * No stateless retry: quiche enforces the anti-amplification limit (3× the bytes received) before the client's
 * address is validated, and a retry would cost every connect a round trip.
 */
// Through the package's root export (the CLI bundle keeps exactly that specifier external; a subpath would be bundled).
import { native } from "@matrixai/quic"
import type { Config, Connection as NativeConnection, ConnectionError } from "@matrixai/quic/native/types.js"
import { randomBytes } from "node:crypto"
import * as dgram from "node:dgram"
import type { Tuning } from "./Tuning.js"

const quiche = native.quiche
const CID_LEN = 20
const SHUTDOWN_READ = 0
const SHUTDOWN_WRITE = 1
const TYPE_INITIAL = 0
/** quiche's send buffer slices are cut from pools of this size. */
const SEND_POOL = 1024 * 1024
/** Sweep finished streams that quiche collected once this many have piled up. */
const LINGER_SWEEP = 256
const EMPTY = new Uint8Array(0)

export { quiche }
export type { Config, ConnectionError, NativeConnection }

/** Why a stream operation cannot go on. A value, never thrown as an `Error` (no stack to build). */
export class StreamFailure {
  constructor(
    readonly kind: "reset" | "stopped" | "closed" | "local" | "io",
    readonly code: number,
    readonly message: string
  ) {}
}

/** How a connection ended. */
export interface CloseInfo {
  readonly by: "local" | "peer" | "idle"
  readonly code: number
  readonly isApp: boolean
  readonly reason: string
  /** The local TLS stack refused the peer's certificate (BoringSSL verification). */
  readonly tlsFail?: boolean
}

const errorCode = (e: unknown, kind: "StreamReset" | "StreamStopped"): number | undefined => {
  const message = e instanceof Error ? e.message : String(e)
  if (!message.startsWith(kind)) return undefined
  const match = /\((\d+)\)/.exec(message)
  return match === null ? 0 : Number(match[1])
}

const infoOf = (error: ConnectionError | null, by: "local" | "peer"): CloseInfo =>
  error === null
    ? { by, code: 0, isApp: true, reason: "" }
    : { by, code: error.errorCode, isApp: error.isApp, reason: Buffer.from(error.reason).toString("utf8") }

/** One bidirectional stream. */
export class QuicStream {
  /** We read the peer's FIN (or stopped reading). */
  private readDone = false
  /** We sent our FIN (or reset our side). */
  private writeDone = false
  /** Why reads / writes end in an error (a peer reset ends only reads; a peer stop only writes). */
  private readFailure: StreamFailure | undefined
  private writeFailure: StreamFailure | undefined
  private readWaiter: (() => void) | undefined
  private writeWaiter: (() => void) | undefined

  constructor(readonly connection: QuicConnection, readonly id: number) {}

  /** The next chunk; `null` at the peer's FIN; `undefined` when nothing is there yet (then `onReadable`). */
  tryRead(): Uint8Array | null | undefined {
    if (this.readDone) {
      if (this.readFailure !== undefined) throw this.readFailure
      return null
    }
    const c = this.connection
    if (c.closeInfo !== undefined) throw c.closedFailure()
    const scratch = c.scratch
    let result: [number, boolean] | null
    try {
      result = c.native.streamRecv(this.id, scratch)
    } catch (e) {
      const code = errorCode(e, "StreamReset")
      const failure = code !== undefined
        ? new StreamFailure("reset", code, `stream reset by peer (code ${code})`)
        : new StreamFailure("io", 0, `stream read failed: ${e instanceof Error ? e.message : String(e)}`)
      this.readFailure = failure
      this.readDone = true
      this.settle()
      throw failure
    }
    if (result === null) return undefined
    const [length, fin] = result
    c.scheduleFlush() // our reads free window for the peer
    if (fin) {
      this.readDone = true
      this.settle()
    }
    if (length > 0) return Buffer.from(scratch.subarray(0, length))
    return fin ? null : undefined
  }

  /** Call `wake` once when a read may make progress (data, FIN, reset, or the connection closing). */
  onReadable(wake: () => void): void {
    // Level-triggered: whatever happened between the last `tryRead` and now (the fiber may have yielded) counts.
    const c = this.connection
    if (this.readDone || c.closeInfo !== undefined || c.native.streamReadable(this.id) || c.native.streamFinished(this.id)) {
      return wake()
    }
    this.readWaiter = wake
    c.readWaiting.add(this)
  }

  /** Write as much of `chunk` as the peer's window takes; returns the count (0: wait with `onWritable`). */
  trySend(chunk: Uint8Array): number {
    if (this.writeDone || this.writeFailure !== undefined) {
      throw this.writeFailure ?? new StreamFailure("local", 0, "stream already ended")
    }
    const c = this.connection
    if (c.closeInfo !== undefined) throw c.closedFailure()
    let written: number | null
    try {
      written = c.native.streamSend(this.id, chunk, false)
    } catch (e) {
      throw this.writeFailed(e)
    }
    c.scheduleFlush()
    return written ?? 0
  }

  /** Call `wake` once when the peer's window opens (or the stream/connection fails). */
  onWritable(wake: () => void): void {
    if (this.writeDone || this.writeFailure !== undefined || this.connection.closeInfo !== undefined) return wake()
    this.writeWaiter = wake
    this.connection.writeWaiting.add(this)
    this.checkWritable()
  }

  /** Send our FIN. Idempotent; no-op after a reset or a failure. */
  end(): void {
    if (this.writeDone) return
    this.writeDone = true
    const c = this.connection
    if (c.closeInfo === undefined && this.writeFailure === undefined) {
      try {
        c.native.streamSend(this.id, new Uint8Array(0), true)
      } catch {
        // The peer stopped the stream or the connection is going: nothing left to finish.
      }
      c.scheduleFlush()
    }
    this.settle()
  }

  /** Abandon the stream: STOP_SENDING unless the peer finished, RESET_STREAM unless we ended. Idempotent. */
  reset(code = 0): void {
    const c = this.connection
    const open = c.closeInfo === undefined
    if (!this.readDone) {
      this.readDone = true
      if (open) this.shutdown(SHUTDOWN_READ, code)
    }
    if (!this.writeDone) {
      this.writeDone = true
      if (open) this.shutdown(SHUTDOWN_WRITE, code)
    }
    const local = new StreamFailure("local", code, "stream was reset locally")
    this.readFailure ??= local
    this.writeFailure ??= local
    if (open) c.scheduleFlush()
    this.wakeAll()
    this.settle()
  }

  get finished(): boolean {
    return this.readDone && this.writeDone
  }

  /** @internal: the connection saw this stream in quiche's readable set. */
  wakeReader(): void {
    const wake = this.readWaiter
    if (wake === undefined) {
      this.peekReset()
      return
    }
    this.readWaiter = undefined
    this.connection.readWaiting.delete(this)
    wake()
  }

  /**
   * Readable while nobody reads: look, without taking any data (a zero-length read), whether the peer reset the
   * stream or finished it. Either ends our read side now, so quiche can collect the stream and grant the peer a new
   * one even if the application never reads it again (a handler that answered and walked away).
   */
  private peekReset(): void {
    if (this.readDone) return
    let result: [number, boolean] | null
    try {
      result = this.connection.native.streamRecv(this.id, EMPTY)
    } catch (e) {
      const code = errorCode(e, "StreamReset")
      this.readFailure ??= code !== undefined
        ? new StreamFailure("reset", code, `stream reset by peer (code ${code})`)
        : new StreamFailure("io", 0, `stream read failed: ${e instanceof Error ? e.message : String(e)}`)
      this.readDone = true
      this.settle()
      return
    }
    if (result !== null && result[1]) {
      this.readDone = true
      this.settle()
    }
  }

  /** @internal: check the peer's window for a waiting writer. */
  checkWritable(): void {
    if (this.writeWaiter === undefined) return
    try {
      if (this.connection.native.streamCapacity(this.id) <= 0) return
    } catch (e) {
      this.writeFailed(e)
    }
    const wake = this.writeWaiter
    this.writeWaiter = undefined
    this.connection.writeWaiting.delete(this)
    wake()
  }

  /** @internal */
  wakeAll(): void {
    this.wakeReader()
    const wake = this.writeWaiter
    if (wake !== undefined) {
      this.writeWaiter = undefined
      this.connection.writeWaiting.delete(this)
      wake()
    }
  }

  private writeFailed(e: unknown): StreamFailure {
    const code = errorCode(e, "StreamStopped")
    const failure = code !== undefined
      ? new StreamFailure("stopped", code, `stream stopped by peer (code ${code})`)
      : new StreamFailure("io", 0, `stream write failed: ${e instanceof Error ? e.message : String(e)}`)
    if (code !== undefined && !this.writeDone) {
      // Answer STOP_SENDING with RESET_STREAM (RFC 9000 §3.5), as quiche expects the application to.
      this.writeDone = true
      this.shutdown(SHUTDOWN_WRITE, code)
      this.connection.scheduleFlush()
    }
    this.writeFailure ??= failure
    this.settle()
    return failure
  }

  private shutdown(direction: number, code: number): void {
    try {
      this.connection.native.streamShutdown(this.id, direction, code)
    } catch {
      // Already closed in that direction.
    }
  }

  private settle(): void {
    if (this.finished) this.connection.streamDone(this)
  }
}

/** What a connection tells its owner. */
export interface ConnectionEvents {
  /** The peer opened a bidirectional stream. */
  onStream?: (stream: QuicStream) => void
  /** The connection ended (once). */
  onClose?: (info: CloseInfo) => void
}

interface Sender {
  send(buffer: Buffer, offset: number, length: number, port: number, host: string): void
}

/** One QUIC connection driven over a `Sender`. */
export class QuicConnection {
  readonly streams = new Map<number, QuicStream>()
  /** @internal streams with a pending read / write waiter. */
  readonly readWaiting = new Set<QuicStream>()
  readonly writeWaiting = new Set<QuicStream>()
  /** @internal read buffer shared by every stream of this connection (copied out per read). */
  readonly scratch: Buffer
  closeInfo: CloseInfo | undefined
  events: ConnectionEvents = {}
  /** Refuse new peer streams (graceful close in progress). */
  stopping = false
  remote: { host: string; port: number }
  private established = false
  private flushQueued = false
  private timer: NodeJS.Timeout | undefined
  private timerAt = Infinity
  private keepAlive: NodeJS.Timeout | undefined
  private nextLocalBidi: number
  /** Peer bidi stream ids below this were all seen; `peerSeen` holds seen ids above it. */
  private peerBidiBase: number
  private readonly peerSeen = new Set<number>()
  private pool = Buffer.allocUnsafe(SEND_POOL)
  private poolOffset = 0
  private readonly maxPacket: number
  private drainWaiters: Array<() => void> = []
  /** Streams finished on our side whose data quiche may still be delivering. */
  private readonly lingering = new Set<number>()
  private lingerLimit = LINGER_SWEEP
  private closeWaiters: Array<(info: CloseInfo) => void> = []
  private creditWaiters: Array<() => void> = []
  /** Notified when the handshake completes or fails (client connect, server accept). */
  onHandshake: (() => void) | undefined

  constructor(
    readonly native: NativeConnection,
    readonly side: "client" | "server",
    readonly local: { host: string; port: number },
    remote: { host: string; port: number },
    private readonly sender: Sender,
    options: { readonly maxSendUdpPayloadSize: number; readonly readableChunkSize: number; readonly keepAliveIntervalTime: number }
  ) {
    this.remote = remote
    this.maxPacket = Math.max(1200, options.maxSendUdpPayloadSize)
    this.scratch = Buffer.allocUnsafe(Math.max(1024, options.readableChunkSize))
    this.nextLocalBidi = side === "client" ? 0 : 1
    this.peerBidiBase = side === "client" ? 1 : 0
    if (options.keepAliveIntervalTime > 0) {
      this.keepAlive = setInterval(() => {
        if (this.closeInfo !== undefined) return
        this.native.sendAckEliciting()
        this.flush()
      }, options.keepAliveIntervalTime)
      this.keepAlive.unref()
    }
  }

  get isEstablished(): boolean {
    return this.established
  }

  /** Feed one received datagram. */
  recv(data: Buffer, from: { host: string; port: number }): void {
    if (this.closeInfo !== undefined) return
    try {
      this.native.recv(data, { to: this.local, from })
    } catch (e) {
      // quiche closed the connection itself (protocol or TLS error): report it below. Anything else is dropped.
      const local = this.native.localError()
      if (local !== null) {
        this.flush()
        this.finish({ ...infoOf(local, "local"), tlsFail: e instanceof Error && e.message === "TlsFail" })
        return
      }
    }
    if (from.port !== this.remote.port || from.host !== this.remote.host) this.remote = from
    const handshaking = !this.established
    if (!this.established) {
      if (this.native.isEstablished()) {
        this.established = true
        this.onHandshake?.()
      }
    }
    if (this.established && this.closeInfo === undefined) this.processStreams()
    this.checkClosed()
    if (this.drainWaiters.length > 0) this.checkDrained()
    // During the handshake, answer at once: the handshake's last flight leaves alone, before any stream data (a
    // stock @matrixai/quic server resets streams that arrive in the datagram that completes its handshake).
    // Afterwards not now: the ACK for this datagram leaves with whatever the woken readers answer in this turn, and
    // the other datagrams that arrived in the same poll are acknowledged together.
    if (handshaking) this.flush()
    else this.scheduleFlush()
  }

  private processStreams(): void {
    for (const id of this.native.readable()) {
      const stream = this.streams.get(id)
      if (stream !== undefined) {
        stream.wakeReader()
        continue
      }
      this.peerStream(id)
    }
    if (this.writeWaiting.size > 0) for (const stream of [...this.writeWaiting]) stream.checkWritable()
    if (this.creditWaiters.length > 0 && this.native.peerStreamsLeftBidi() > 0) this.wakeCredit()
  }

  /** Call `wake` once the peer grants more streams (or the connection closes). */
  onStreamCredit(wake: () => void): void {
    if (this.closeInfo !== undefined || this.native.peerStreamsLeftBidi() > 0) return wake()
    this.creditWaiters.push(wake)
  }

  private wakeCredit(): void {
    const waiters = this.creditWaiters
    this.creditWaiters = []
    for (const wake of waiters) wake()
  }

  private peerStream(id: number): void {
    const peerBit = this.side === "client" ? 1 : 0
    if ((id & 1) !== peerBit) return // one of ours, already done with
    if ((id & 2) !== 0 || this.stopping || this.closeInfo !== undefined || this.seen(id)) {
      // Unidirectional (not offered), refused while stopping, or a stream we already finished: stop it.
      if (!this.seen(id) || (id & 2) !== 0 || this.stopping) {
        try {
          this.native.streamShutdown(id, SHUTDOWN_READ, 0)
          if ((id & 2) === 0) this.native.streamShutdown(id, SHUTDOWN_WRITE, 0)
        } catch {
          // already gone
        }
      }
      return
    }
    this.markSeen(id)
    const stream = new QuicStream(this, id)
    this.streams.set(id, stream)
    this.events.onStream?.(stream)
  }

  private seen(id: number): boolean {
    return id < this.peerBidiBase || this.peerSeen.has(id)
  }

  private markSeen(id: number): void {
    if (id === this.peerBidiBase) {
      this.peerBidiBase += 4
      while (this.peerSeen.delete(this.peerBidiBase)) this.peerBidiBase += 4
    } else {
      this.peerSeen.add(id)
    }
  }

  /** Open a bidirectional stream; `undefined` while the peer grants no more (wait with `onStreamCredit`). */
  openBidi(): QuicStream | undefined {
    if (this.closeInfo !== undefined) throw this.closedFailure()
    if (this.stopping) throw new StreamFailure("closed", 0, "connection is closing")
    if (this.native.peerStreamsLeftBidi() === 0) return undefined
    const id = this.nextLocalBidi
    try {
      // Creates the stream in quiche (nothing is sent until data or FIN).
      this.native.streamSend(id, new Uint8Array(0), false)
    } catch (e) {
      if (e instanceof Error && e.message === "StreamLimit") return undefined
      throw new StreamFailure("io", 0, `cannot open a stream: ${e instanceof Error ? e.message : String(e)}`)
    }
    this.nextLocalBidi += 4
    const stream = new QuicStream(this, id)
    this.streams.set(id, stream)
    return stream
  }

  /** @internal */
  streamDone(stream: QuicStream): void {
    if (this.streams.get(stream.id) !== stream) return
    this.streams.delete(stream.id)
    this.readWaiting.delete(stream)
    this.writeWaiting.delete(stream)
    // Our side is done, but what we wrote may not be acknowledged yet: a graceful close waits for that.
    this.lingering.add(stream.id)
    if (this.lingering.size > this.lingerLimit) {
      this.sweepLingering()
      // Amortized: sweep again when the set has doubled past what is still in flight.
      this.lingerLimit = Math.max(LINGER_SWEEP, 2 * this.lingering.size)
    }
    if (this.drainWaiters.length > 0) this.checkDrained()
  }

  /** Forget streams quiche has collected (everything sent was acknowledged and everything received was read). */
  private sweepLingering(): void {
    // The binding answers "collected" only by throwing, once per stream: an Error without a stack costs a third.
    const stackTraceLimit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    try {
      for (const id of this.lingering) {
        try {
          this.native.streamCapacity(id)
        } catch {
          // InvalidStreamState: collected. StreamStopped: the peer wants nothing more from it. Either way, done.
          this.lingering.delete(id)
        }
      }
    } finally {
      Error.stackTraceLimit = stackTraceLimit
    }
  }

  private checkDrained(): void {
    if (this.streams.size > 0) return
    this.sweepLingering()
    if (this.lingering.size > 0) return
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const wake of waiters) wake()
  }

  /** Resolve when no stream is open and all our stream data was acknowledged (or the connection closed). */
  drained(): Promise<void> {
    if (this.closeInfo !== undefined) return Promise.resolve()
    return new Promise((resolve) => {
      this.drainWaiters.push(resolve)
      this.checkDrained()
    })
  }

  /** Resolve when the connection has ended. */
  whenClosed(): Promise<CloseInfo> {
    if (this.closeInfo !== undefined) return Promise.resolve(this.closeInfo)
    return new Promise((resolve) => this.closeWaiters.push(resolve))
  }

  /** Reset every open stream (the connection stays up). */
  resetStreams(code = 0): void {
    for (const stream of [...this.streams.values()]) stream.reset(code)
  }

  /** Close now: reset what is open, send CONNECTION_CLOSE. Idempotent. */
  close(isApp: boolean, code: number, reason: string): void {
    if (this.closeInfo !== undefined) return
    // What was written in this turn leaves first (after close quiche sends nothing but CONNECTION_CLOSE): a last
    // `call.aborted` before an exit must not be lost.
    this.flush()
    try {
      this.native.close(isApp, code, Buffer.from(reason))
    } catch {
      // Already closing.
    }
    this.flush()
    this.finish(this.native.peerError() !== null ? infoOf(this.native.peerError(), "peer") : { by: "local", code, isApp, reason })
  }

  /** @internal */
  closedFailure(): StreamFailure {
    const info = this.closeInfo
    return new StreamFailure("closed", info?.code ?? 0, info === undefined ? "connection closed" : closedMessage(info))
  }

  /** Coalesce sends: one flush per event-loop turn. */
  scheduleFlush(): void {
    if (this.flushQueued || this.closeInfo !== undefined) return
    this.flushQueued = true
    setImmediate(this.flushNow)
  }

  private readonly flushNow = () => {
    this.flushQueued = false
    if (this.closeInfo === undefined) this.flush()
  }

  /** Drain quiche's outgoing packets to the socket and re-arm the timer. */
  flush(): void {
    const native = this.native
    for (;;) {
      if (SEND_POOL - this.poolOffset < this.maxPacket) {
        this.pool = Buffer.allocUnsafe(SEND_POOL)
        this.poolOffset = 0
      }
      const offset = this.poolOffset
      let result: ReturnType<NativeConnection["send"]>
      try {
        result = native.send(this.pool.subarray(offset, offset + this.maxPacket))
      } catch {
        break
      }
      if (result === null) break
      const length = result[0]
      // The slice stays untouched until the socket is done with it: the next packet starts after it.
      this.poolOffset = offset + ((length + 7) & ~7)
      const to = result[1].to
      this.sender.send(this.pool, offset, length, to.port, to.host)
    }
    this.armTimer()
  }

  private armTimer(): void {
    if (this.closeInfo !== undefined) return
    const timeout = this.native.timeout()
    if (timeout === null) {
      if (this.timer !== undefined) {
        clearTimeout(this.timer)
        this.timer = undefined
        this.timerAt = Infinity
      }
      this.checkClosed()
      return
    }
    const at = performance.now() + timeout
    // A timer that fires early is harmless (quiche checks its own clock); only move it earlier.
    if (this.timer !== undefined && this.timerAt <= at + 1) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timerAt = at
    this.timer = setTimeout(this.onTimer, Math.max(0, Math.ceil(timeout)))
    this.timer.unref()
  }

  private readonly onTimer = () => {
    this.timer = undefined
    this.timerAt = Infinity
    if (this.closeInfo !== undefined) return
    this.native.onTimeout()
    this.checkClosed()
    if (this.closeInfo === undefined) this.flush()
  }

  /** Notice a close that quiche decided (peer CONNECTION_CLOSE, idle timeout, handshake failure). */
  private checkClosed(): void {
    if (this.closeInfo !== undefined) return
    const native = this.native
    if (native.isTimedOut()) {
      this.finish({ by: "idle", code: 0, isApp: true, reason: "idle timeout" })
      return
    }
    if (!native.isClosed() && !native.isDraining()) return
    const peer = native.peerError()
    this.finish(peer !== null ? infoOf(peer, "peer") : infoOf(native.localError(), "local"))
  }

  private finish(info: CloseInfo): void {
    if (this.closeInfo !== undefined) return
    this.closeInfo = info
    if (this.timer !== undefined) clearTimeout(this.timer)
    if (this.keepAlive !== undefined) clearInterval(this.keepAlive)
    this.timer = undefined
    for (const stream of [...this.streams.values()]) stream.wakeAll()
    this.streams.clear()
    this.readWaiting.clear()
    this.writeWaiting.clear()
    const drain = this.drainWaiters
    this.drainWaiters = []
    for (const wake of drain) wake()
    this.wakeCredit()
    if (!this.established) this.onHandshake?.()
    this.events.onClose?.(info)
    const waiters = this.closeWaiters
    this.closeWaiters = []
    for (const wake of waiters) wake(info)
  }
}

const TLS_ALERTS: Record<number, string> = {
  40: "handshake_failure",
  42: "bad_certificate",
  43: "unsupported_certificate",
  45: "certificate_expired",
  46: "certificate_unknown",
  48: "unknown_ca",
  49: "access_denied",
  80: "internal_error",
  116: "certificate_required",
  120: "no_application_protocol"
}
/** QUIC carries TLS alerts as transport error codes 0x100 + alert. */
export const tlsAlert = (info: CloseInfo): number | undefined =>
  !info.isApp && info.code >= 0x100 && info.code <= 0x1ff ? info.code - 0x100 : undefined
export const describeTlsAlert = (alert: number): string => `TLS alert ${alert} (${TLS_ALERTS[alert] ?? "unknown"})`

/** The reason text of a close, with TLS alerts spelled out. */
export const closeReason = (info: CloseInfo): string => {
  if (info.by === "idle") return "idle timeout"
  const alert = tlsAlert(info)
  if (alert === undefined) return info.reason
  return info.by === "peer"
    ? `the peer rejected the TLS handshake: ${describeTlsAlert(alert)}`
    : `we rejected the peer's TLS handshake: ${describeTlsAlert(alert)}`
}

export const closedMessage = (info: CloseInfo): string => {
  if (info.by === "idle") return "connection lost: no answer from the peer within the idle timeout"
  const reason = closeReason(info)
  return `connection closed by ${info.by === "peer" ? "the peer" : "us"}` +
    (reason !== "" ? `: ${reason}` : info.code !== 0 ? ` (code ${info.code})` : "")
}

// ---------------------------------------------------------------------------------------------------------------
// Sockets

export interface SocketOptions {
  readonly host: string
  readonly port: number
  /** Kernel send/receive buffer size (0 keeps the OS default). */
  readonly bufferSize: number
}

const openSocket = (options: SocketOptions, onMessage: (msg: Buffer, rinfo: dgram.RemoteInfo) => void) =>
  new Promise<dgram.Socket>((resolve, reject) => {
    const socket = dgram.createSocket({ type: options.host.includes(":") ? "udp6" : "udp4" })
    const onError = (e: Error) => {
      socket.close()
      reject(e)
    }
    socket.once("error", onError)
    socket.on("message", onMessage)
    socket.bind(options.port, options.host, () => {
      socket.off("error", onError)
      // Errors on an unconnected UDP socket are per-datagram (ICMP); quiche's loss recovery handles them.
      socket.on("error", () => undefined)
      if (options.bufferSize > 0) {
        try {
          socket.setRecvBufferSize(options.bufferSize)
          socket.setSendBufferSize(options.bufferSize)
        } catch {
          // Capped or refused by the OS: the default stays.
        }
      }
      resolve(socket)
    })
  })

const closeSocket = (socket: dgram.Socket) =>
  new Promise<void>((resolve) => {
    try {
      socket.close(() => resolve())
    } catch {
      resolve()
    }
  })

/** Driver settings (sizes in bytes, times in milliseconds). */
export interface DriverOptions {
  readonly maxSendUdpPayloadSize: number
  readonly readableChunkSize: number
  readonly keepAliveIntervalTime: number
  readonly udpBufferSize: number
}

// ---------------------------------------------------------------------------------------------------------------
// Server

export class QuicServer {
  private readonly byCid = new Map<string, QuicConnection>()
  private stopping = false
  readonly host: string
  readonly port: number

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly config: Config,
    private readonly options: DriverOptions,
    private readonly onConnection: (connection: QuicConnection) => void
  ) {
    const address = socket.address()
    this.host = address.address
    this.port = address.port
  }

  /**
   * Listen on `host:port`. `onConnection` gets each connection once its handshake is complete (`verify` may refuse
   * it first: return a TLS alert to close it with).
   */
  static async listen(
    socketOptions: SocketOptions,
    config: Config,
    options: DriverOptions,
    verify: (connection: QuicConnection) => number | undefined,
    onConnection: (connection: QuicConnection) => void
  ): Promise<QuicServer> {
    let server: QuicServer | undefined
    const socket = await openSocket(socketOptions, (msg, rinfo) => server?.receive(msg, rinfo, verify))
    server = new QuicServer(socket, config, options, onConnection)
    return server
  }

  get connectionCount(): number {
    return new Set(this.byCid.values()).size
  }

  private receive(msg: Buffer, rinfo: dgram.RemoteInfo, verify: (connection: QuicConnection) => number | undefined) {
    const from = { host: rinfo.address, port: rinfo.port }
    let key: string
    if ((msg[0]! & 0x80) === 0) {
      // Short header: our connection ids are CID_LEN bytes, right after the first byte.
      if (msg.length < 1 + CID_LEN) return
      key = msg.toString("latin1", 1, 1 + CID_LEN)
    } else {
      let header: ReturnType<typeof quiche.Header.fromSlice>
      try {
        header = quiche.Header.fromSlice(msg, CID_LEN)
      } catch {
        return
      }
      key = Buffer.from(header.dcid).toString("latin1")
      if (!this.byCid.has(key)) {
        if (header.ty !== TYPE_INITIAL || this.stopping) return
        if (!quiche.versionIsSupported(header.version)) {
          const out = Buffer.allocUnsafe(1500)
          try {
            const length = quiche.negotiateVersion(header.scid, header.dcid, out)
            this.socket.send(out, 0, length, rinfo.port, rinfo.address)
          } catch {
            // malformed: drop
          }
          return
        }
        if (msg.length < 1200) return // RFC 9000 §14.1: a client Initial fills a 1200-byte datagram
        this.accept(key, from, verify)
      }
    }
    this.byCid.get(key)?.recv(msg, from)
  }

  private accept(odcid: string, from: { host: string; port: number }, verify: (connection: QuicConnection) => number | undefined) {
    const scid = randomBytes(CID_LEN)
    let native: NativeConnection
    try {
      native = quiche.Connection.accept(scid, null, { host: this.host, port: this.port }, from, this.config)
    } catch {
      return
    }
    const connection = new QuicConnection(native, "server", { host: this.host, port: this.port }, from, this.socket, this.options)
    const ownKey = scid.toString("latin1")
    this.byCid.set(ownKey, connection)
    this.byCid.set(odcid, connection)
    connection.onHandshake = () => {
      connection.onHandshake = undefined
      // Retransmitted Initials are addressed to the client's original id; once established they are over.
      this.byCid.delete(odcid)
      if (connection.closeInfo !== undefined) return
      const alert = verify(connection)
      if (alert !== undefined) {
        connection.close(false, 0x100 + alert, "")
        return
      }
      this.onConnection(connection)
    }
    void connection.whenClosed().then(() => {
      this.byCid.delete(ownKey)
      this.byCid.delete(odcid)
    })
  }

  /** Connections that completed their handshake and are open. */
  connections(): Array<QuicConnection> {
    return [...new Set(this.byCid.values())]
  }

  /** Stop accepting new connections and new peer streams (open streams go on). */
  stopAccepting(): void {
    this.stopping = true
    for (const connection of this.connections()) connection.stopping = true
  }

  /** Close the socket (connections must have been closed first). */
  async close(): Promise<void> {
    this.stopping = true
    for (const connection of this.connections()) connection.close(true, 0, "")
    // Let the CONNECTION_CLOSE datagrams leave before the socket goes.
    await new Promise((resolve) => setImmediate(resolve))
    await closeSocket(this.socket)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Client

/**
 * Connect to `remote` over a fresh socket. Resolves once the handshake completed and `verify` accepted the server
 * (return a TLS alert to refuse it), rejects with the `CloseInfo` of a failed handshake, or with "timeout".
 */
export const connect = async (
  remote: { host: string; port: number },
  serverName: string | undefined,
  config: Config,
  options: DriverOptions,
  verify: (connection: QuicConnection) => number | undefined,
  timeoutMs: number,
  signal?: AbortSignal
): Promise<{ connection: QuicConnection; close: () => Promise<void> }> => {
  let connection: QuicConnection | undefined
  const socket = await openSocket(
    { host: remote.host.includes(":") ? "::" : "0.0.0.0", port: 0, bufferSize: options.udpBufferSize },
    (msg, rinfo) => connection?.recv(msg, { host: rinfo.address, port: rinfo.port })
  )
  const closeAll = async () => {
    connection?.close(true, 0, "")
    await new Promise((resolve) => setImmediate(resolve))
    await closeSocket(socket)
  }
  try {
    await new Promise<void>((resolve, reject) => socket.connect(remote.port, remote.host, (e?: Error) => (e ? reject(e) : resolve())))
    const address = socket.address()
    const local = { host: address.address, port: address.port }
    const sender: Sender = { send: (buffer, offset, length) => socket.send(buffer, offset, length) }
    const native = quiche.Connection.connect(serverName ?? null, randomBytes(CID_LEN), local, remote, config)
    connection = new QuicConnection(native, "client", local, remote, sender, options)
    const c = connection
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish("timeout"), timeoutMs)
      const onAbort = () => finish("aborted")
      signal?.addEventListener("abort", onAbort, { once: true })
      function finish(outcome: "ok" | "timeout" | "aborted" | CloseInfo) {
        clearTimeout(timer)
        signal?.removeEventListener("abort", onAbort)
        c.onHandshake = undefined
        if (outcome === "ok") resolve()
        else reject(outcome)
      }
      c.onHandshake = () => {
        if (c.closeInfo !== undefined) return finish(c.closeInfo)
        const alert = verify(c)
        if (alert !== undefined) {
          c.close(false, 0x100 + alert, "")
          return finish(c.closeInfo ?? { by: "local", code: 0x100 + alert, isApp: false, reason: "" })
        }
        finish("ok")
      }
      c.flush()
    })
  } catch (e) {
    await closeAll()
    throw e
  }
  return { connection, close: closeAll }
}

// ---------------------------------------------------------------------------------------------------------------
// TLS configuration

/**
 * Build a quiche config. `verifyPeer` asks the peer for its certificate — and, in this binding, requires one
 * (`with_boring_ssl_ctx` sets FAIL_IF_NO_PEER_CERT). With `allowAnyCertificate` BoringSSL accepts whatever
 * certificate the peer presents (we decide by fingerprint afterwards); without it the chain must verify against `ca`
 * (and the server name, on a client).
 *
 * "Request but do not require" (SPEC §3) is not expressible here. The binding's `withBoringSslCtx(verifyPeer, …)` sets
 * BoringSSL's mode to PEER | FAIL_IF_NO_PEER_CERT (or NONE) together with the accept-any callback; the only other
 * switch, `Config.verifyPeer(true)`, is quiche's `SSL_CTX_set_verify(ctx, PEER, NULL)`: it drops FAIL_IF_NO_PEER_CERT
 * but also the callback, so BoringSSL then verifies a presented certificate against the (empty) CA store and refuses
 * every self-signed one — an alknet identity. Tried on 127.0.0.1: after `verifyPeer(true)` a client without a
 * certificate connects and one with a self-signed certificate is refused. A server therefore either requires a
 * certificate (accepting any) or asks for none.
 */
export const makeConfig = (options: Tuning & {
  readonly key: string
  readonly cert: string
  readonly ca?: string | undefined
  readonly verifyPeer: boolean
  readonly allowAnyCertificate: boolean
  readonly alpns: ReadonlyArray<string>
}): Config => {
  const encoder = new TextEncoder()
  const config = quiche.Config.withBoringSslCtx(
    options.verifyPeer,
    options.allowAnyCertificate,
    options.ca === undefined ? null : encoder.encode(options.ca),
    [encoder.encode(options.key)],
    [encoder.encode(options.cert)],
    SIGALGS
  )
  config.grease(true)
  config.setMaxIdleTimeout(options.maxIdleTimeout)
  config.setMaxRecvUdpPayloadSize(options.maxRecvUdpPayloadSize)
  config.setMaxSendUdpPayloadSize(options.maxSendUdpPayloadSize)
  config.setInitialMaxData(options.initialMaxData)
  config.setInitialMaxStreamDataBidiLocal(options.initialMaxStreamDataBidiLocal)
  config.setInitialMaxStreamDataBidiRemote(options.initialMaxStreamDataBidiRemote)
  config.setInitialMaxStreamDataUni(0)
  config.setInitialMaxStreamsBidi(options.initialMaxStreamsBidi)
  config.setInitialMaxStreamsUni(0)
  config.setMaxConnectionWindow(options.maxConnectionWindow)
  config.setMaxStreamWindow(options.maxStreamWindow)
  config.setDisableActiveMigration(true)
  config.setApplicationProtos([...options.alpns])
  return config
}

const SIGALGS = [
  "rsa_pkcs1_sha256",
  "rsa_pkcs1_sha384",
  "rsa_pkcs1_sha512",
  "rsa_pss_rsae_sha256",
  "rsa_pss_rsae_sha384",
  "rsa_pss_rsae_sha512",
  "ecdsa_secp256r1_sha256",
  "ecdsa_secp384r1_sha384",
  "ecdsa_secp521r1_sha512",
  "ed25519"
].join(":")
