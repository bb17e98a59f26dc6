//! MQTT topics of CONTRACT §2: `apr/{apr}/{device}/{channel}`.

use core::fmt;

use crate::id::is_valid_id;

/// The last level of a device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Device → gateway SenML packs (QoS 1).
    Up,
    /// Device → gateway `online` / `offline`, retained; also the will.
    Status,
    /// Gateway → device configuration, retained.
    Config,
    /// Gateway → device end-to-end acknowledgment of packs by `bt`.
    Ack,
}

impl Channel {
    /// The topic level as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Up => "up",
            Channel::Status => "status",
            Channel::Config => "config",
            Channel::Ack => "ack",
        }
    }

    fn parse(s: &str) -> Option<Channel> {
        match s {
            "up" => Some(Channel::Up),
            "status" => Some(Channel::Status),
            "config" => Some(Channel::Config),
            "ack" => Some(Channel::Ack),
            _ => None,
        }
    }

    /// Whether a device publishes on this channel (as opposed to the gateway).
    pub const fn is_device_to_gateway(self) -> bool {
        matches!(self, Channel::Up | Channel::Status)
    }
}

/// A parsed device topic, borrowing the ids from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTopic<'a> {
    /// APR id.
    pub apr: &'a str,
    /// Device id.
    pub device: &'a str,
    /// Which channel.
    pub channel: Channel,
}

/// Why a topic is not a device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Not of the form `apr/{apr}/{device}/{channel}`.
    Shape,
    /// The APR id breaks the id rule.
    AprId,
    /// The device id breaks the id rule.
    DeviceId,
    /// The last level is not `up`, `status`, `config` or `ack`.
    Channel,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Shape => "topic is not apr/{apr}/{device}/{channel}",
            TopicError::AprId => "APR id must match ^[a-z0-9][a-z0-9-]{0,63}$",
            TopicError::DeviceId => "device id must match ^[a-z0-9][a-z0-9-]{0,63}$",
            TopicError::Channel => "channel must be up, status, config or ack",
        })
    }
}

impl<'a> DeviceTopic<'a> {
    /// Parses `apr/{apr}/{device}/{channel}`.
    pub fn parse(topic: &'a str) -> Result<DeviceTopic<'a>, TopicError> {
        let mut parts = topic.split('/');
        let (Some("apr"), Some(apr), Some(device), Some(channel), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TopicError::Shape);
        };
        if !is_valid_id(apr) {
            return Err(TopicError::AprId);
        }
        if !is_valid_id(device) {
            return Err(TopicError::DeviceId);
        }
        let channel = Channel::parse(channel).ok_or(TopicError::Channel)?;
        Ok(DeviceTopic {
            apr,
            device,
            channel,
        })
    }

    /// Writes the topic into `out` (no allocation), returning the written part.
    pub fn write<'b>(&self, out: &'b mut [u8]) -> Option<&'b str> {
        let mut w = crate::encode::SliceWriter::new(out);
        fmt::Write::write_fmt(
            &mut w,
            format_args!("apr/{}/{}/{}", self.apr, self.device, self.channel.as_str()),
        )
        .ok()?;
        w.into_str()
    }
}

#[cfg(feature = "std")]
impl DeviceTopic<'_> {
    /// The topic as an owned string.
    pub fn to_topic_string(&self) -> std::string::String {
        std::format!("apr/{}/{}/{}", self.apr, self.device, self.channel.as_str())
    }
}

/// The topic string for a device channel.
#[cfg(feature = "std")]
pub fn topic(apr: &str, device: &str, channel: Channel) -> std::string::String {
    std::format!("apr/{apr}/{device}/{}", channel.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_channel() {
        let t = DeviceTopic::parse("apr/los-aromos/caseta/up").unwrap();
        assert_eq!(t.apr, "los-aromos");
        assert_eq!(t.device, "caseta");
        assert_eq!(t.channel, Channel::Up);
        for c in ["up", "status", "config", "ack"] {
            let s = format!("apr/a/b/{c}");
            assert_eq!(DeviceTopic::parse(&s).unwrap().channel.as_str(), c);
        }
    }

    #[test]
    fn refuses_malformed_topics_with_the_reason() {
        assert_eq!(DeviceTopic::parse("apr/a/b"), Err(TopicError::Shape));
        assert_eq!(DeviceTopic::parse("apr/a/b/up/x"), Err(TopicError::Shape));
        assert_eq!(DeviceTopic::parse("xyz/a/b/up"), Err(TopicError::Shape));
        assert_eq!(DeviceTopic::parse("apr/A/b/up"), Err(TopicError::AprId));
        assert_eq!(DeviceTopic::parse("apr/a/+/up"), Err(TopicError::DeviceId));
        assert_eq!(DeviceTopic::parse("apr/a/b/down"), Err(TopicError::Channel));
    }

    #[test]
    fn writes_without_allocating() {
        let mut buf = [0u8; 64];
        let t = DeviceTopic {
            apr: "x1",
            device: "d",
            channel: Channel::Ack,
        };
        assert_eq!(t.write(&mut buf), Some("apr/x1/d/ack"));
        let mut small = [0u8; 4];
        assert_eq!(t.write(&mut small), None);
    }
}
