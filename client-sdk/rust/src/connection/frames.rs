//! The connection task's side of the hub's frames: messages, gaps, acks and
//! errors, subscriptions renewed after a reconnect, and the resume rounds.

use super::*;

impl ConnectionTask {
    /// The hub ended a subscription (a refreshed token no longer grants its
    /// topic): the application's stream gets its last event.
    pub(super) fn on_unsubscribed(&mut self, ended: Unsubscribed) {
        let Some(sub) = self.subs.remove(&ended.topic) else {
            return;
        };
        if let Some(first) = sub.first {
            let _ = first.send(Err(SubscribeError::new(
                SubscribeErrorKind::Refused(ended.code),
                "ended by the hub",
            )));
        }
        sub.queue.end(Some(Event::Closed {
            code: Some(ended.code),
            reason: "the hub ended this subscription: the token no longer grants its topic"
                .to_string(),
        }));
    }

    /// Subscribes every subscription the hub does not know on this
    /// connection, with `since` where a position is held.
    pub(super) async fn renew_subscriptions(
        &mut self,
        ws: &mut WsStream,
    ) -> Result<(), SendFailed> {
        let topics: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| *s.tracker.phase() == Phase::Idle)
            .map(|(t, _)| t.clone())
            .collect();
        let mut round = self.reconnected.then(ResumeRound::default);
        for topic in topics {
            let (id, frame) = self.subscribe_request(&topic);
            if let Some(round) = round.as_mut() {
                round.waiting.push(id);
                round.subscriptions += 1;
            }
            self.feed_frame(ws, &frame).await?;
        }
        self.flush(ws).await?;
        if let Some(round) = round {
            self.resume = Some(round);
            self.finish_round_if_done();
        }
        Ok(())
    }

    /// Registers a `subscribe` of `topic`, whose subscription the caller holds,
    /// under a fresh request id; returns the id and the frame to send.
    pub(super) fn subscribe_request(&mut self, topic: &str) -> (u64, ClientFrame) {
        let id = self.next_id();
        let sub = self.subs.get_mut(topic).expect("the caller holds it");
        let frame = ClientFrame::Subscribe(sub.tracker.subscribe_frame(id));
        self.pending.insert(
            id,
            Pending::Subscribe {
                topic: topic.to_string(),
            },
        );
        (id, frame)
    }

    /// Tries again the renewals the hub could not serve earlier.
    pub(super) async fn retry_due(&mut self, ws: &mut WsStream) -> Result<(), SendFailed> {
        let now = Instant::now();
        let due: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.retry_at.is_some_and(|at| at <= now))
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            self.subs.get_mut(&topic).expect("listed above").retry_at = None;
            let (_, frame) = self.subscribe_request(&topic);
            self.send_frame(ws, &frame).await?;
        }
        Ok(())
    }

    pub(super) async fn on_text(
        &mut self,
        text: &str,
        ws: &mut WsStream,
        drain_at: &mut Option<Instant>,
    ) -> Result<(), SendFailed> {
        let frame = match serde_json::from_str::<ServerFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the hub, ignored");
                return Ok(());
            }
        };
        match frame {
            ServerFrame::Message(msg) => self.on_message(msg, ws).await?,
            ServerFrame::Ack(ack) => self.on_ack(ack),
            ServerFrame::Gap(gap) => self.on_gap(gap, ws).await?,
            ServerFrame::Retract(retract) => self.on_retract(retract, ws).await?,
            ServerFrame::Error(err) => self.on_error(err),
            ServerFrame::Stats(stats) => {
                if let Some(sub) = self.subs.get(&stats.topic)
                    && *sub.tracker.phase() == Phase::Live
                {
                    sub.queue.push_stats(stats);
                }
            }
            ServerFrame::Pong(pong) => {
                if let Some(Pending::Reply(Reply::Ping { reply, sent })) =
                    self.pending.remove(&pong.id)
                {
                    let _ = reply.send(Ok(sent.elapsed()));
                }
            }
            ServerFrame::Drain(drain) => {
                if drain_at.is_none() {
                    let delay = jitter_below(Duration::from_millis(drain.retry_ms), &mut self.rng);
                    *drain_at = Some(Instant::now() + delay);
                    self.events.emit(ConnectionEvent::Draining {
                        retry_ms: drain.retry_ms,
                        reconnect_in: delay,
                    });
                }
            }
            ServerFrame::Welcome(_) => tracing::warn!("second welcome on one connection, ignored"),
            ServerFrame::Unsubscribed(ended) => self.on_unsubscribed(ended),
        }
        Ok(())
    }

    pub(super) async fn on_message(
        &mut self,
        mut msg: Message,
        ws: &mut WsStream,
    ) -> Result<(), SendFailed> {
        let Some(sub) = self.subs.get_mut(&msg.topic) else {
            return Ok(());
        };
        match sub.tracker.check(&msg) {
            Verdict::Deliver => {
                if let Err(mismatch) = delta::resolve(sub.base.as_ref(), &mut msg) {
                    // Never a wrong board: ask again from what was delivered;
                    // the hub replays the latest state in full.
                    tracing::warn!(topic = %msg.topic, %mismatch, "delta not applicable, resubscribing with since");
                    sub.base = None;
                    return self.resubscribe(&msg.topic, ws).await;
                }
                let seq = msg.seq;
                if sub.tracker.mode() == Some(Mode::Feed) {
                    match sub.queue.offer_feed(msg) {
                        Offer::Queued => sub.tracker.advance(seq),
                        Offer::Gone => {}
                        Offer::Overflow => {
                            // The application is too far behind: stop the flow
                            // at the hub and renew with `since` once it caught up.
                            tracing::debug!(topic = %sub_topic(sub), "subscription buffer full, suspended");
                            sub.tracker.suspend();
                            let topic = sub_topic(sub);
                            let id = self.next_id();
                            self.pending
                                .insert(id, Pending::Reply(Reply::Unsubscribe(None)));
                            self.send_frame(
                                ws,
                                &ClientFrame::Unsubscribe(Unsubscribe { id, topic }),
                            )
                            .await?;
                        }
                    }
                } else {
                    sub.base = Some(Base::of(&msg));
                    sub.queue.push_state(msg);
                    sub.tracker.advance(seq);
                }
            }
            Verdict::Duplicate | Verdict::Ignore => {}
            Verdict::Gap => {
                // `prev` says messages were missed: renew with `since` so the
                // hub replays them from the bus (PROTOCOL.md section 5).
                tracing::debug!(topic = %msg.topic, seq = msg.seq, prev = msg.prev, "gap, resubscribing with since");
                self.resubscribe(&msg.topic, ws).await?;
            }
        }
        Ok(())
    }

    /// A retraction (PROTOCOL.md section 13): told to the application (room
    /// or not: it must not miss one), and the position moves past it.
    pub(super) async fn on_retract(
        &mut self,
        retract: Retract,
        ws: &mut WsStream,
    ) -> Result<(), SendFailed> {
        let Some(sub) = self.subs.get_mut(&retract.topic) else {
            return Ok(());
        };
        match sub.tracker.check_retract(&retract) {
            Verdict::Deliver => {
                sub.tracker.advance(retract.at);
                sub.queue.push_always(Event::Retract {
                    topic: retract.topic,
                    seq: retract.seq,
                    at: retract.at,
                });
            }
            Verdict::Duplicate | Verdict::Ignore => {}
            Verdict::Gap => {
                tracing::debug!(topic = %retract.topic, at = retract.at, prev = retract.prev, "gap before a retraction, resubscribing with since");
                self.resubscribe(&retract.topic, ws).await?;
            }
        }
        Ok(())
    }

    /// A hole the hub announced on a feed: what the bus lost is reported to
    /// the application, and the subscription goes on (PROTOCOL.md section 5).
    pub(super) async fn on_gap(&mut self, gap: Gap, ws: &mut WsStream) -> Result<(), SendFailed> {
        let Some(sub) = self.subs.get_mut(&gap.topic) else {
            return Ok(());
        };
        match sub.tracker.on_gap(&gap) {
            GapVerdict::Report {
                after_seq,
                before_seq,
            } => {
                let epoch = sub.tracker.epoch().map(str::to_string);
                sub.queue.push_always(Event::Gap {
                    topic: gap.topic,
                    after_seq,
                    before_seq: Some(before_seq),
                    epoch_changed: false,
                    epoch,
                });
            }
            GapVerdict::Ignore => {}
            GapVerdict::Renew => {
                // The hole starts after messages this subscription never got:
                // those may still be on the bus, so ask for them.
                tracing::debug!(topic = %gap.topic, after = gap.after, before = gap.before, "gap frame past the position, resubscribing with since");
                self.resubscribe(&gap.topic, ws).await?;
            }
        }
        Ok(())
    }

    /// Renews the subscription of `topic` on this connection with `since`:
    /// `unsubscribe` then `subscribe`, in one write. Messages until the new
    /// `ack` belong to the old subscription and are ignored.
    pub(super) async fn resubscribe(
        &mut self,
        topic: &str,
        ws: &mut WsStream,
    ) -> Result<(), SendFailed> {
        let unsub_id = self.next_id();
        self.pending
            .insert(unsub_id, Pending::Reply(Reply::Unsubscribe(None)));
        let (_, subscribe) = self.subscribe_request(topic);
        self.feed_frame(
            ws,
            &ClientFrame::Unsubscribe(Unsubscribe {
                id: unsub_id,
                topic: topic.to_string(),
            }),
        )
        .await?;
        self.feed_frame(ws, &subscribe).await?;
        self.flush(ws).await
    }

    pub(super) fn on_ack(&mut self, ack: Ack) {
        match self.pending.remove(&ack.id) {
            Some(Pending::Subscribe { topic }) => self.on_subscribed(&topic, &ack),
            Some(Pending::Reply(reply)) => reply.answer(None),
            Some(Pending::Auth) => {
                self.token_valid_until(ack.expires_at);
                self.events.emit(ConnectionEvent::TokenRefreshed {
                    expires_at: ack.expires_at,
                });
            }
            None => {}
        }
    }

    pub(super) fn on_error(&mut self, err: tribune_protocol::Error) {
        let Some(id) = err.id else {
            tracing::warn!(code = %err.code, message = %err.message, "error from the hub");
            return;
        };
        match self.pending.remove(&id) {
            Some(Pending::Subscribe { topic }) => self.on_subscribe_refused(id, &topic, &err),
            Some(Pending::Reply(reply)) => reply.answer(Some(err)),
            Some(Pending::Auth) => self.refresh_failed(format!("{}: {}", err.code, err.message)),
            None => {}
        }
    }

    /// The hub acknowledged a `subscribe` of `topic`.
    pub(super) fn on_subscribed(&mut self, topic: &str, ack: &Ack) {
        let Some(sub) = self.subs.get_mut(topic) else {
            return;
        };
        let Some(outcome) = sub.tracker.on_ack(ack) else {
            return;
        };
        // A new subscription starts from a full message (the hub never
        // sends a delta before one): nothing held before is a base.
        sub.base = None;
        sub.queue.set_epoch(ack.epoch.clone());
        if let Some(first) = sub.first.take() {
            let info = SubscribeInfo {
                mode: ack.mode.or(sub.tracker.mode()).unwrap_or(Mode::Feed),
                epoch: ack.epoch.clone().unwrap_or_default(),
                seq: ack.seq.unwrap_or(0),
                recovered: ack.recovered,
            };
            let _ = first.send(Ok(info));
        }
        let renewal = match outcome.lost {
            Some(lost) => {
                sub.queue.push_always(Event::Gap {
                    topic: topic.to_string(),
                    after_seq: lost.after_seq,
                    before_seq: None,
                    epoch_changed: lost.epoch_changed,
                    epoch: lost.epoch,
                });
                Renewal::Gap
            }
            None => Renewal::Recovered,
        };
        self.count_renewal(ack.id, renewal);
    }

    /// The hub refused the `subscribe` request `id` of `topic`.
    pub(super) fn on_subscribe_refused(
        &mut self,
        id: u64,
        topic: &str,
        err: &tribune_protocol::Error,
    ) {
        let Some(sub) = self.subs.get_mut(topic) else {
            return;
        };
        if !sub.tracker.on_refused(id) {
            return;
        }
        if let Some(first) = sub.first.take() {
            let _ = first.send(Err(SubscribeError::new(
                SubscribeErrorKind::Refused(err.code),
                format!("{topic}: {}", err.message),
            )));
            self.subs.remove(topic);
        } else if matches!(err.code, ErrorCode::Unavailable | ErrorCode::RateLimited) {
            // The hub cannot serve it *yet* (bus down, too fast): try again.
            let bound = self.config.backoff_max.min(Duration::from_secs(2));
            sub.retry_at = Some(
                Instant::now() + Duration::from_millis(50) + jitter_below(bound, &mut self.rng),
            );
        } else {
            let sub = self.subs.remove(topic).expect("found above");
            sub.queue.end(Some(Event::Closed {
                code: Some(err.code),
                reason: err.message.clone(),
            }));
            self.count_renewal(id, Renewal::Refused);
        }
    }

    /// Counts the answer to a renewal of the current resume round, if `id`
    /// is one, and announces the round once every renewal is answered.
    pub(super) fn count_renewal(&mut self, id: u64, renewal: Renewal) {
        if self
            .resume
            .as_mut()
            .is_some_and(|round| round.count(id, renewal))
        {
            self.finish_round_if_done();
        }
    }

    pub(super) fn finish_round_if_done(&mut self) {
        if self.resume.as_ref().is_some_and(|r| r.waiting.is_empty()) {
            let r = self.resume.take().expect("checked above");
            self.events.emit(ConnectionEvent::Resumed {
                subscriptions: r.subscriptions,
                recovered: r.recovered,
                gaps: r.gaps,
                refused: r.refused,
            });
        }
    }
}
