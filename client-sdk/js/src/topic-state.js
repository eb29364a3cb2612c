// TopicState: what the client knows of one subscribed topic (mode, epoch,
// last seq, expected prev, pending replay) and where a resume starts from
// (PROTOCOL.md sections 3 and 5). Pure state: the client applies the frames.

/**
 * The client's view of one topic on the wire: shared by every Subscription
 * handle on that topic, so the hub sees one `subscribe` per topic however
 * many widgets show it.
 */
export class TopicState {
  constructor(topic, history, delayMs = 0) {
    /** Topic name. */
    this.topic = topic;
    /** Handles that receive this topic's events. */
    this.handles = new Set();
    /** `history` asked by the first handle, sent on fresh subscriptions. */
    this.history = history;
    /** The spoiler shield's delay (`delay_ms`), sent in every subscribe when above 0. */
    this.delayMs = delayMs;
    /** `state` or `feed`, from the hub's ack. */
    this.mode = null;
    /** Epoch of the bus that numbered `lastSeq`; a new epoch resets it. */
    this.epoch = null;
    /** Seq of the last message delivered in this epoch (0: none). */
    this.lastSeq = 0;
    /** `ack.seq` of the current subscription: the resume point before any message. */
    this.ackSeq = 0;
    /** Whether `ackSeq`/`lastSeq` describe a position we can resume from. */
    this.hasPosition = false;
    /** Id of the `subscribe` in flight or answered on this connection; null when none. */
    this.subId = null;
    /** Whether the hub acked `subId`: messages before that are for an old subscription. */
    this.acked = false;
    /** `since` sent with the current subscribe, or null. */
    this.resumedFrom = null;
    /**
     * Feed topics: the `prev` the next message must not exceed. null skips
     * the check once (the first message of a replay, whose prev the hub may
     * not know).
     */
    this.expectPrev = null;
    /** Whether the next message is the first after the ack. */
    this.firstAfterAck = true;
    /**
     * Feed topics: the seq of the message the last `gap` frame announced
     * next (its `before`), taken whatever its prev; null when none since the
     * ack.
     */
    this.gapBefore = null;
    /** State topics: the latest message, handed to handles that join later. */
    this.latest = null;
    /** The latest `stats` figures. */
    this.stats = null;
    /** Timer of a subscribe retried after `rate_limited`/`unavailable`. */
    this.retryTimer = null;
    /** Retries of the subscribe after transient errors, for backoff. */
    this.retries = 0;
    /** Whether replayed messages up to `ackSeq` are still to come. */
    this.replayPending = false;
    /** Whether the hub granted delta updates to the current subscription. */
    this.deltas = false;
    /**
     * State topics with deltas: the payload text last delivered and its seq,
     * the base of the next delta ({seq, text}); null when none.
     */
    this.base = null;
  }

  /**
   * Where to resume from: the last delivered seq while a replay is still
   * coming in, else the later of that and the ack's seq (a fresh feed
   * subscription starts at `ack.seq`; an unrecovered resume accepted its loss).
   */
  resumePoint() {
    return this.replayPending ? this.lastSeq : Math.max(this.lastSeq, this.ackSeq);
  }
}
