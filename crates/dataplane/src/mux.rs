//! Connections by process, not by task pair: every link from this process to another one
//! shares one TCP connection (a *session*, or a few past [`MuxConfig::streams_per_session`]),
//! each link a stream of its own inside it, with a flow-control window of its own (yamux), so
//! a link whose receiver stops reading holds up only itself. Two adjacent stages of 64 tasks
//! on two workers open a handful of TCP connections instead of 4,096.
//!
//! It is a [`Network`](crate::transport::Network) and an
//! [`Acceptor`](crate::transport::Acceptor) like TCP, so links and the listener do not know
//! about it: a link's `connect` opens a stream on the session to that address (dialling one
//! the first time, and again after it broke), and the listener takes every inbound stream
//! as a connection of its own, with its challenge, Hello deadline, signature check and
//! connection cap. What a session adds is checked here: a cap on TCP connections
//! ([`MuxConfig::max_tcp`]), on streams per session ([`MuxConfig::max_streams`]), and sessions
//! without a stream closed after [`MuxConfig::peer_idle`].
//!
//! One port serves both kinds of connection. The listener speaks first on every TCP
//! connection (a link's challenge); a multiplexing client answers with [`PREFACE`] where a
//! link would send its Hello, and the connection becomes a session (`sniff`). So a process
//! with `RAINSTORM_DATA_MUX=0`, or any client of the per-link protocol, still reaches a
//! multiplexing listener.
//!
//! `dial` is the connecting side (`MuxNet`, the pool of sessions by address), `accept` the
//! listening side (`MuxAcceptor`), `session` one session's shared state, `drive` the task that
//! drives it, `socket` its TCP connection, `stream` a stream as a connection.

mod accept;
mod dial;
mod drive;
mod session;
mod sniff;
mod socket;
mod stream;

pub use accept::MuxAcceptor;
pub use dial::MuxNet;

use crate::DataConfig;
use std::time::Duration;

/// What a multiplexing client sends first on a new TCP connection. The listener reads it
/// where a link's Hello would start and hands the connection to a session instead. Its first
/// four bytes, read as a frame length, are far above any frame's limit, so no link's first
/// frame can start with it.
pub const PREFACE: [u8; 8] = *b"\xffRSMUX1\n";

/// The shape of sessions. [`MuxConfig::of`] derives it from the data plane's settings.
#[derive(Clone, Debug)]
pub struct MuxConfig {
    /// Streams this process opens on one session; past it, it opens another TCP connection
    /// to the same peer. Two stages of 64 tasks on two workers put 32 × 32 = 1,024 links
    /// between each pair: one session each.
    pub streams_per_session: usize,
    /// Streams a session holds at once on either side (yamux's cap: a stream past it is not
    /// opened and the peer is told to go away). Above `streams_per_session`, because a listener may still hold a
    /// stream its client already closed.
    pub max_streams: usize,
    /// TCP connections the listening side holds at once, sessions and per-link connections
    /// together (more are closed as they come): the listener's descriptors.
    pub max_tcp: usize,
    /// A session of this process's links without a stream for this long is closed.
    pub idle: Duration,
    /// A session a peer opened that has no stream for this long is closed: an unauthenticated
    /// peer cannot park descriptors here.
    pub peer_idle: Duration,
    /// A session whose peer sends nothing for this long while a new stream waits for its
    /// first answer is taken for dead and closed (a peer behind a partition sends no reset);
    /// its links reconnect on a new one.
    pub silence: Duration,
    /// How long opening a session may take: the TCP connect and the listener's first frame.
    pub handshake: Duration,
    /// The most bytes of one stream in one frame on the wire: what another stream's frame
    /// may wait behind.
    pub split_send: usize,
    /// How far the streams of a session may grow their receive windows past yamux's initial
    /// 256 KiB, together. Credit, not memory: a link never has more than its own window
    /// (`window_bytes`) unacknowledged, so no stream holds more than that unread.
    pub window_growth: usize,
}

impl MuxConfig {
    /// The shape of sessions under `cfg`: the listener's Hello deadline also bounds an idle
    /// peer session and a silent peer; its connection cap bounds TCP connections.
    pub fn of(cfg: &DataConfig) -> MuxConfig {
        let hello = Duration::from_millis(cfg.hello_deadline_ms.max(1) as u64);
        MuxConfig {
            streams_per_session: 1024,
            max_streams: 2048,
            max_tcp: cfg.max_conns.max(1),
            idle: Duration::from_secs(3),
            peer_idle: hello,
            silence: hello,
            handshake: Duration::from_secs(5),
            split_send: 64 * 1024,
            window_growth: 512 << 20,
        }
    }

    /// yamux's configuration for this shape.
    fn yamux(&self) -> yamux::Config {
        let streams = self.max_streams.clamp(1, 1 << 16);
        // yamux asserts, in each setter, that the window covers 256 KiB for every stream the
        // cap allows: the window is set first, covering the larger of its default cap and ours.
        let floor = streams.max(512) * yamux::DEFAULT_CREDIT as usize;
        let mut c = yamux::Config::default();
        c.set_max_connection_receive_window(Some(floor.saturating_add(self.window_growth)));
        c.set_max_num_streams(streams);
        c.set_split_send_size(self.split_send.max(1024));
        c
    }
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig::of(&DataConfig::default())
    }
}

#[cfg(test)]
mod tests;
