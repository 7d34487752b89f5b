//! MQTT topic filters, matching, and the stream id taken from a topic.

use std::fmt;

/// Errors in a topic filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The filter is empty.
    #[error("topic filter is empty")]
    Empty,
    /// `#` is not the last level, or a wildcard shares a level with other characters.
    #[error("{0:?}: '#' must be the last level and wildcards must fill a whole level")]
    BadWildcard(String),
    /// `$share/` without a group name or a filter after it.
    #[error("{0:?}: a shared subscription is $share/<group>/<filter>, the group without wildcards")]
    BadShare(String),
}

/// A validated MQTT topic filter, e.g. `sensors/+/vibration` or `plant/#`, or a shared
/// subscription `$share/<group>/<filter>`: subscribed as written, matched (and stream ids
/// taken) by `<filter>`, since the broker delivers the topics `<filter>` matches.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicFilter {
    filter: String,
    levels: Vec<String>,
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.filter)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.filter)
    }
}

impl TopicFilter {
    /// Parses and checks a filter.
    ///
    /// # Errors
    /// [`TopicError`] for an empty filter or a misplaced wildcard.
    pub fn parse(filter: &str) -> Result<Self, TopicError> {
        if filter.is_empty() {
            return Err(TopicError::Empty);
        }
        let matched = match filter.strip_prefix("$share/") {
            Some(shared) => match shared.split_once('/') {
                Some((group, rest))
                    if !group.is_empty() && !group.contains(['+', '#']) && !rest.is_empty() =>
                {
                    rest
                }
                _ => return Err(TopicError::BadShare(filter.into())),
            },
            None => filter,
        };
        let levels: Vec<String> = matched.split('/').map(str::to_owned).collect();
        for (i, level) in levels.iter().enumerate() {
            let wild = level.contains(['+', '#']);
            if wild && level.len() != 1 {
                return Err(TopicError::BadWildcard(filter.into()));
            }
            if level == "#" && i + 1 != levels.len() {
                return Err(TopicError::BadWildcard(filter.into()));
            }
        }
        Ok(Self {
            filter: filter.into(),
            levels,
        })
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.filter
    }

    /// Whether some topic matches both filters (`plant/+/vib` and `plant/#` do; `a/+` and
    /// `b/+` do not). ('$' topics, which a leading wildcard does not match, are not told apart.)
    ///
    /// ```
    /// use ebgand::pipeline::topic::TopicFilter;
    /// let f = |s| TopicFilter::parse(s).unwrap();
    /// assert!(f("plant/+/vib").overlaps(&f("plant/#")));
    /// assert!(f("a/#").overlaps(&f("a")));
    /// assert!(!f("a/+").overlaps(&f("a/b/c")));
    /// ```
    pub fn overlaps(&self, other: &Self) -> bool {
        let (a, b) = (&self.levels, &other.levels);
        for i in 0..a.len().max(b.len()) {
            match (a.get(i).map(String::as_str), b.get(i).map(String::as_str)) {
                (Some("#"), _) | (_, Some("#")) => return true,
                (Some(x), Some(y)) if x == y || x == "+" || y == "+" => {}
                _ => return false,
            }
        }
        true
    }

    /// When `topic` matches, the topic levels matched by wildcards, each after a `/`
    /// (empty for a filter without wildcards, and for `a/#` matching its parent `a`).
    ///
    /// Each level keeps its own `/`, so `a/#` gives `a` and `a/` (an empty level)
    /// different captures: `""` and `"/"`. Joined without them, two topics would name one
    /// stream and mix their samples.
    ///
    /// ```
    /// use ebgand::pipeline::topic::TopicFilter;
    /// let f = TopicFilter::parse("plant/+/pump/#").unwrap();
    /// assert_eq!(f.captures("plant/hall2/pump/7/vib").as_deref(), Some("/hall2/7/vib"));
    /// assert_eq!(f.captures("plant/hall2/fan/7"), None);
    /// ```
    pub fn captures(&self, topic: &str) -> Option<String> {
        let mut captured = String::new();
        let mut parts = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            match level.as_str() {
                "#" => {
                    // '#' matches the parent level too ("a/#" matches "a").
                    for part in parts.by_ref() {
                        captured.push('/');
                        captured.push_str(part);
                    }
                    // Topics starting with '$' are not matched by a leading wildcard.
                    return (!(i == 0 && topic.starts_with('$'))).then_some(captured);
                }
                "+" => {
                    let part = parts.next()?;
                    if i == 0 && part.starts_with('$') {
                        return None;
                    }
                    captured.push('/');
                    captured.push_str(part);
                }
                literal => {
                    if parts.next()? != literal {
                        return None;
                    }
                }
            }
        }
        parts.next().is_none().then_some(captured)
    }
}

/// The stream id for a topic: `name` followed by what [`TopicFilter::captures`] took
/// from it (`name` alone for a filter without wildcards).
pub fn stream_id(name: &str, captured: &str) -> String {
    format!("{name}{captured}")
}

/// Which of `count` daemons owns a stream: FNV-1a (64-bit) of its id, modulo `count`.
///
/// Stable across versions, platforms and restarts (it is part of the deployment contract:
/// changing it would move streams between daemons), and cheap enough to run per message.
pub fn partition_of(stream_id: &str, count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_match_by_their_filter() {
        let f = TopicFilter::parse("$share/ebgand/sensors/+/vibration").unwrap();
        assert_eq!(f.as_str(), "$share/ebgand/sensors/+/vibration");
        assert_eq!(f.captures("sensors/m1/vibration").as_deref(), Some("/m1"));
        assert_eq!(f.captures("$share/ebgand/sensors/m1/vibration"), None);
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/",
        ] {
            assert!(
                matches!(TopicFilter::parse(bad), Err(TopicError::BadShare(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // Reference values of FNV-1a 64: the empty string and "a".
        assert_eq!(
            partition_of("", u32::MAX),
            (0xcbf2_9ce4_8422_2325u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            partition_of("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8cu64 % u64::from(u32::MAX)) as u32
        );
        let mut counts = [0u32; 2];
        for i in 0..100 {
            counts[partition_of(&format!("vibration/m{i}"), 2) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c >= 35), "{counts:?}");
    }

    #[test]
    fn plus_and_hash_capture_levels() {
        let f = TopicFilter::parse("sensors/+/vibration").unwrap();
        assert_eq!(
            f.captures("sensors/pump7/vibration").as_deref(),
            Some("/pump7")
        );
        assert_eq!(f.captures("sensors/pump7/temp"), None);
        assert_eq!(f.captures("sensors/pump7/vibration/x"), None);
        let h = TopicFilter::parse("plant/#").unwrap();
        assert_eq!(h.captures("plant/a/b").as_deref(), Some("/a/b"));
        assert_eq!(h.captures("plant").as_deref(), Some(""));
        // An empty level is a level: "plant/" is not the stream of "plant".
        assert_eq!(h.captures("plant/").as_deref(), Some("/"));
        assert_eq!(h.captures("plant/a/").as_deref(), Some("/a/"));
        let two = TopicFilter::parse("a/+/+").unwrap();
        assert_eq!(two.captures("a//x").as_deref(), Some("//x"));
        assert_eq!(two.captures("a/x/").as_deref(), Some("/x/"));
        assert_eq!(h.captures("other/a"), None);
        let lit = TopicFilter::parse("a/b").unwrap();
        assert_eq!(lit.captures("a/b").as_deref(), Some(""));
        assert_eq!(stream_id("vib", "/pump7"), "vib/pump7");
        assert_eq!(stream_id("vib", ""), "vib");
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcard() {
        assert_eq!(TopicFilter::parse("#").unwrap().captures("$SYS/x"), None);
        assert_eq!(TopicFilter::parse("+/x").unwrap().captures("$SYS/x"), None);
    }

    #[test]
    fn bad_filters_are_refused() {
        assert_eq!(TopicFilter::parse(""), Err(TopicError::Empty));
        assert!(TopicFilter::parse("a/#/b").is_err());
        assert!(TopicFilter::parse("a/b+/c").is_err());
    }
}
