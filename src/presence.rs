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

/// One store's side of the protocol.
#[derive(Debug, Default, Clone)]
pub struct Presence {
    others_listen: bool,
    has_committed: bool,
}

impl Presence {
    /// What to send when opening.
    pub fn opened(&mut self) -> Option<Message> {
        Some(Message::Who)
    }

    /// What to send after a local subscribe.
    pub fn subscribed(&mut self) -> Option<Message> {
        Some(Message::Hello)
    }

    /// What to send after a local commit.
    pub fn committed(&mut self) -> Option<Message> {
        self.has_committed = true;
        self.others_listen.then_some(Message::Commit)
    }

    /// What to send on receiving `message`, given whether this store has
    /// subscriptions now.
    pub fn received(&mut self, message: Message, subscribed: bool) -> Option<Message> {
        match message {
            Message::Who => subscribed.then_some(Message::Hello),
            Message::Hello => {
                self.others_listen = true;
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
    fn a_lone_store_stays_quiet() {
        let mut p = Presence::default();
        assert_eq!(p.opened(), Some(Message::Who));
        assert_eq!(p.committed(), None);
        assert_eq!(p.received(Message::Who, false), None);
    }

    #[test]
    fn a_commit_that_raced_with_hello_is_announced_on_hello() {
        let mut writer = Presence::default();
        writer.opened();
        assert_eq!(writer.committed(), None, "nobody listens yet");
        assert_eq!(
            writer.received(Message::Hello, false),
            Some(Message::Commit)
        );
        assert_eq!(
            writer.committed(),
            Some(Message::Commit),
            "announced from now on"
        );
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
