//! The connection task's answers to the handles' commands, online and
//! offline, and the subscriptions they add or remove.

use super::*;

impl ConnectionTask {
    /// A command while connected.
    pub(super) async fn command_online(
        &mut self,
        cmd: Command,
        ws: &mut WsStream,
    ) -> Result<(), SendFailed> {
        match cmd {
            Command::Subscribe {
                topic,
                key,
                options,
                queue,
                reply,
            } => {
                if !self.add_sub(topic.clone(), key, options, queue, reply) {
                    return Ok(());
                }
                let (_, frame) = self.subscribe_request(&topic);
                self.send_frame(ws, &frame).await
            }
            Command::Unsubscribe { topic, key, reply } => {
                let Some(sub) = self.remove_sub(&topic, key) else {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    return Ok(());
                };
                if matches!(sub.tracker.phase(), Phase::Pending { .. } | Phase::Live) {
                    let id = self.next_id();
                    self.pending
                        .insert(id, Pending::Reply(Reply::Unsubscribe(reply)));
                    self.send_frame(ws, &ClientFrame::Unsubscribe(Unsubscribe { id, topic }))
                        .await
                } else {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    Ok(())
                }
            }
            Command::CaughtUp { topic, key } => {
                let Some(sub) = self.subs.get_mut(&topic).filter(|s| s.key == key) else {
                    return Ok(());
                };
                if !sub.tracker.unsuspend() {
                    return Ok(());
                }
                sub.queue.clear_overflow();
                let (_, frame) = self.subscribe_request(&topic);
                self.send_frame(ws, &frame).await
            }
            Command::Publish { topic, data, reply } => {
                let id = self.next_id();
                self.pending
                    .insert(id, Pending::Reply(Reply::Publish(reply)));
                self.send_frame(ws, &ClientFrame::Publish(Publish { id, topic, data }))
                    .await
            }
            Command::React {
                topic,
                reaction,
                reply,
            } => {
                let id = self.next_id();
                self.pending.insert(id, Pending::Reply(Reply::React(reply)));
                self.send_frame(
                    ws,
                    &ClientFrame::React(React {
                        id,
                        topic,
                        reaction,
                    }),
                )
                .await
            }
            Command::Ping { reply } => {
                let id = self.next_id();
                self.pending.insert(
                    id,
                    Pending::Reply(Reply::Ping {
                        reply,
                        sent: Instant::now(),
                    }),
                );
                self.send_frame(ws, &ClientFrame::Ping(Ping { id })).await
            }
            Command::Close { .. } | Command::Lifecycle(_) => unreachable!("handled by serve"),
        }
    }

    /// A command while no connection is up.
    pub(super) fn command_offline(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe {
                topic,
                key,
                options,
                queue,
                reply,
            } => {
                // Registered now, sent by the next connection.
                self.add_sub(topic, key, options, queue, reply);
            }
            Command::Unsubscribe { topic, key, reply } => {
                self.remove_sub(&topic, key);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Command::CaughtUp { topic, key } => {
                if let Some(sub) = self.subs.get_mut(&topic).filter(|s| s.key == key)
                    && sub.tracker.unsuspend()
                {
                    sub.queue.clear_overflow();
                }
            }
            Command::Publish { topic, reply, .. } => {
                let _ = reply.send(Err(PublishError::new(
                    PublishErrorKind::NotConnected,
                    topic,
                )));
            }
            Command::React { topic, reply, .. } => {
                let _ = reply.send(Err(ReactError::new(ReactErrorKind::NotConnected, topic)));
            }
            Command::Ping { reply } => {
                let _ = reply.send(Err(PingError::new(PingErrorKind::NotConnected, "")));
            }
            Command::Close { .. } | Command::Lifecycle(_) => {
                unreachable!("handled by the caller")
            }
        }
    }

    /// Registers a subscription; refuses a second one to the same topic.
    pub(super) fn add_sub(
        &mut self,
        topic: String,
        key: u64,
        options: SubscribeOptions,
        queue: Arc<SubQueue>,
        reply: oneshot::Sender<Result<SubscribeInfo, SubscribeError>>,
    ) -> bool {
        if self.subs.contains_key(&topic) {
            let _ = reply.send(Err(SubscribeError::new(
                SubscribeErrorKind::AlreadySubscribed,
                format!("{topic}: this client already has a subscription to it"),
            )));
            return false;
        }
        let tracker = Tracker::new(topic.clone(), options.history, options.since)
            .asking_delta(!options.full_messages)
            .delayed(options.delay);
        self.subs.insert(
            topic,
            Sub {
                key,
                tracker,
                queue,
                first: Some(reply),
                retry_at: None,
                base: None,
            },
        );
        true
    }

    /// Removes the subscription `key` of `topic`, not a newer one.
    pub(super) fn remove_sub(&mut self, topic: &str, key: u64) -> Option<Sub> {
        if self.subs.get(topic).is_some_and(|s| s.key == key) {
            let sub = self.subs.remove(topic)?;
            sub.queue.end(None);
            Some(sub)
        } else {
            None
        }
    }
}
