//! Who needs to hear about commits: the small protocol that lets a store
//! skip announcing its commits on the cross-context channel while no other
//! context listens (`web::live` carries the messages).
//!
//! - A new store asks [`Message::Who`] listens; a context with
//!   subscriptions answers [`Message::Hello`], and says `Hello` whenever it
//!   subscribes.
//! - On a `Hello`, a store that has committed anything sends a
//!   [`Message::Commit`] hint at once: its commits that raced with the
//!   `Hello` are then not missed (earlier ones are in the listener's
//!   catch-up read). From then on it announces every commit.
//! - Forget notices are always sent: they name events that a listener may
//!   have delivered before its `Hello` arrived.
//! - A store that commits and goes away before the `Hello` answering its
//!   `Who` arrives would never be heard: so commits are announced anyway
//!   during the first [`HANDSHAKE_MS`] after opening (while answers may be
//!   on their way), and a store that committed anything it did not
//!   announce says [`Message::Commit`] once when it closes.

/// A message on the channel, by its `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Who,
    Hello,
    Commit,
    Forget,
}

impl Message {
    pub fn kind(self) -> &'static str {
        match self {
            Message::Who => "who",
            Message::Hello => "hello",
            Message::Commit => "commit",
            Message::Forget => "forget",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        [
            Message::Who,
            Message::Hello,
            Message::Commit,
            Message::Forget,
        ]
        .into_iter()
        .find(|m| m.kind() == kind)
    }
}

/// How long after opening a store announces its commits whether or not
/// anyone has said it listens (ms): the time a `Hello` may take to come back.
pub const HANDSHAKE_MS: f64 = 1000.0;

/// One store's side of the protocol.
#[derive(Debug, Default, Clone)]
pub struct Presence {
    others_listen: bool,
    has_committed: bool,
    /// A commit was made and not announced.
    unannounced: bool,
    /// When the store opened (ms).
    opened_at: f64,
}

impl Presence {
    /// What to send when opening at `now` (ms).
    pub fn opened(&mut self, now: f64) -> Option<Message> {
        self.opened_at = now;
        Some(Message::Who)
    }

    /// What to send after a local subscribe.
    pub fn subscribed(&mut self) -> Option<Message> {
        Some(Message::Hello)
    }

    /// What to send after a local commit at `now` (ms).
    pub fn committed(&mut self, now: f64) -> Option<Message> {
        self.has_committed = true;
        let announce = self.others_listen || now - self.opened_at < HANDSHAKE_MS;
        self.unannounced = !announce;
        announce.then_some(Message::Commit)
    }

    /// What to send when the store closes.
    pub fn closing(&mut self) -> Option<Message> {
        std::mem::take(&mut self.unannounced).then_some(Message::Commit)
    }

    /// What to send on receiving `message`, given whether this store has
    /// subscriptions now.
    pub fn received(&mut self, message: Message, subscribed: bool) -> Option<Message> {
        match message {
            Message::Who => subscribed.then_some(Message::Hello),
            Message::Hello => {
                self.others_listen = true;
                self.unannounced = false;
                self.has_committed.then_some(Message::Commit)
            }
            Message::Commit | Message::Forget => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_store_stays_quiet_once_the_handshake_is_over() {
        let mut p = Presence::default();
        assert_eq!(p.opened(10_000.0), Some(Message::Who));
        assert_eq!(p.committed(10_000.0 + HANDSHAKE_MS), None);
        assert_eq!(p.received(Message::Who, false), None);
    }

    #[test]
    fn a_commit_that_raced_with_hello_is_announced_on_hello() {
        let mut writer = Presence::default();
        writer.opened(0.0);
        assert_eq!(writer.committed(HANDSHAKE_MS), None, "nobody listens yet");
        assert_eq!(
            writer.received(Message::Hello, false),
            Some(Message::Commit)
        );
        assert_eq!(
            writer.committed(5.0 * HANDSHAKE_MS),
            Some(Message::Commit),
            "announced from now on"
        );
        assert_eq!(writer.closing(), None, "nothing left unannounced");
    }

    #[test]
    fn a_store_that_commits_and_leaves_before_hello_is_still_heard() {
        // Right after opening, while a Hello may be on its way.
        let mut writer = Presence::default();
        writer.opened(1_000.0);
        assert_eq!(writer.committed(1_010.0), Some(Message::Commit));
        assert_eq!(writer.closing(), None);
        // Later, alone: quiet per commit, one hint when it closes.
        assert_eq!(writer.committed(1_000.0 + HANDSHAKE_MS), None);
        assert_eq!(writer.closing(), Some(Message::Commit));
        assert_eq!(writer.closing(), None, "once");
    }

    #[test]
    fn a_listener_answers_who_and_greets_on_subscribe() {
        let mut reader = Presence::default();
        assert_eq!(reader.subscribed(), Some(Message::Hello));
        assert_eq!(reader.received(Message::Who, true), Some(Message::Hello));
        let mut fresh = Presence::default();
        assert_eq!(
            fresh.received(Message::Hello, false),
            None,
            "nothing committed yet"
        );
    }

    #[test]
    fn kinds_round_trip() {
        for m in [
            Message::Who,
            Message::Hello,
            Message::Commit,
            Message::Forget,
        ] {
            assert_eq!(Message::from_kind(m.kind()), Some(m));
        }
        assert_eq!(Message::from_kind("other"), None);
    }
}
