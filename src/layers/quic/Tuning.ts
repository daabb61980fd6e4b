/**
 * The QUIC transport's tuning: plain data, so it can be read (e.g. by a benchmark that builds its own QUIC floor with
 * the same settings) without loading QUIC (quiche and its binding).
 */
/**
 * Transport settings, named as in @matrixai/quic's config (sizes in bytes, times in milliseconds). The defaults
 * are the best settings measured by `bench/quic-raw.ts` on loopback.
 */
export interface Tuning {
  /**
   * Close a connection after this long without hearing from the peer (0 = never). With the keep-alive below, a
   * peer that died (killed, unplugged) is noticed within this time, and its pending calls fail "connection lost".
   */
  readonly maxIdleTimeout: number
  /** Send a keep-alive this often while idle (must be below `maxIdleTimeout`). */
  readonly keepAliveIntervalTime: number
  /** Connection-level flow-control window granted to the peer at start. */
  readonly initialMaxData: number
  /** Stream window for streams we open. */
  readonly initialMaxStreamDataBidiLocal: number
  /** Stream window for streams the peer opens. */
  readonly initialMaxStreamDataBidiRemote: number
  /** Concurrent bidirectional streams the peer may open. */
  readonly initialMaxStreamsBidi: number
  /** Upper bounds the windows may auto-tune to. */
  readonly maxConnectionWindow: number
  readonly maxStreamWindow: number
  /** Largest UDP payload we accept / send (1200 is the QUIC minimum). */
  readonly maxRecvUdpPayloadSize: number
  readonly maxSendUdpPayloadSize: number
  /** Most bytes one stream read takes from quiche. */
  readonly readableChunkSize: number
  /** Kernel send/receive buffer of the UDP socket (capped by the OS maximum; 0 keeps the OS default). */
  readonly udpBufferSize: number
}

export const defaultTuning: Tuning = {
  maxIdleTimeout: 10_000,
  keepAliveIntervalTime: 2_000,
  initialMaxData: 10 * 1024 * 1024,
  initialMaxStreamDataBidiLocal: 1024 * 1024,
  initialMaxStreamDataBidiRemote: 1024 * 1024,
  initialMaxStreamsBidi: 1024,
  maxConnectionWindow: 24 * 1024 * 1024,
  maxStreamWindow: 16 * 1024 * 1024,
  maxRecvUdpPayloadSize: 65527,
  maxSendUdpPayloadSize: 65527,
  readableChunkSize: 64 * 1024,
  udpBufferSize: 4 * 1024 * 1024
}
