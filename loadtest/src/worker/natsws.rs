//! The NATS protocol over nats-server's websocket listener on a worker's
//! client (the peer the hub is compared with): `CONNECT`, `SUB` each
//! confirmed by the `PONG` of the `PING` after it, `MSG`s accounted, the
//! server's `PING` answered. Operations are parsed by `crate::natsws`.

use std::collections::VecDeque;
use std::time::Instant;

use super::client::{Client, Conn, Protocol, confirmed, delivered};
use super::shared::Shared;
use super::stats::bump;
use crate::natsws::{NatsOp, NatsParser, connect_ops, sub_ops};
use crate::ws::encode_client_frame;

/// A NATS connection's own state.
#[derive(Debug, Default)]
pub struct NatsWs {
    /// Subscriptions waiting for their `PONG`, in order.
    pong_queue: VecDeque<usize>,
    /// Bytes of an operation cut by a frame boundary.
    parser: NatsParser,
}

impl Protocol for NatsWs {
    const SUBPROTOCOL: Option<&'static str> = None;

    fn hello(&mut self, out: &mut Vec<u8>) {
        encode_client_frame(out, 0x2, connect_ops());
    }

    fn subscribe(&mut self, shared: &Shared, client: &mut Client, out: &mut Vec<u8>) {
        let now = Instant::now();
        let mut ops = Vec::new();
        for (k, s) in client.subs.iter_mut().enumerate() {
            let subject = format!("{}{}", shared.spec.subject_prefix, s.name);
            sub_ops(&mut ops, &subject, k as u64 + 1);
            self.pong_queue.push_back(k);
            s.sent_at = Some(now);
        }
        encode_client_frame(out, 0x2, &ops);
    }

    fn on_frame(
        &mut self,
        shared: &Shared,
        client: &mut Client,
        st: &mut Conn,
        data: &[u8],
        now: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.parser.push(data);
        loop {
            let op = match self.parser.next_op() {
                Ok(Some(op)) => op,
                Ok(None) => return Ok(()),
                Err(e) => {
                    eprintln!("client {}: {}", client.index, e.0);
                    return Err("bad_nats_protocol".into());
                }
            };
            match op {
                NatsOp::Msg {
                    subject, payload, ..
                } => {
                    let topic = subject.strip_prefix(shared.spec.subject_prefix.as_bytes());
                    match topic.and_then(|t| client.sub_of(shared, t)) {
                        Some(k) => delivered(shared, client, k, payload, true, now),
                        None => bump(
                            &mut shared.stats.borrow_mut().errors,
                            "message_for_unknown_subject",
                        ),
                    }
                }
                NatsOp::Ping => encode_client_frame(out, 0x2, b"PONG\r\n"),
                NatsOp::Pong => {
                    if !st.ready {
                        st.hello_received(shared);
                    } else if let Some(k) = self.pong_queue.pop_front() {
                        // Core NATS says nothing about what was published
                        // before: only a subscription known to predate the
                        // first publication starts at counter 0.
                        let baseline_zero = client.before_publish && !client.subs[k].counted;
                        confirmed(shared, client, k, baseline_zero);
                    }
                }
                NatsOp::Info | NatsOp::Ok => {}
                NatsOp::Err(text) => {
                    let text = String::from_utf8_lossy(text).to_lowercase();
                    let code = text.trim_matches('\'').replace(' ', "_");
                    bump(&mut shared.stats.borrow_mut().errors, &code);
                }
            }
        }
    }
}
