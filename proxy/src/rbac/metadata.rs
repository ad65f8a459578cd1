//! `type.matcher.v3.MetadataMatcher` over the dynamic metadata earlier filters set. A value
//! that is absent (no such filter, key or path) matches no value matcher, not even
//! `present_match: false`; only `invert` turns that into a match. So, as in Envoy, a rule on
//! JWT claims that no filter produced simply does not match.

use envoy_types::pb::envoy::r#type::matcher::v3::{
    DoubleMatcher, ListMatcher, MetadataMatcher as MetadataMatcherProto, ValueMatcher as Proto,
    double_matcher, list_matcher, metadata_matcher::path_segment::Segment, value_matcher,
};
use envoy_types::pb::google::protobuf::{Value, value::Kind};

use super::error::RbacError;
use super::input::Input;
use crate::matcher::StringMatcher;

/// A compiled metadata matcher.
#[derive(Debug, Clone)]
pub(crate) struct MetadataMatcher {
    filter: String,
    path: Box<[String]>,
    value: ValueMatcher,
    invert: bool,
}

#[derive(Debug, Clone)]
enum ValueMatcher {
    Null,
    /// `[start, end)`.
    Range(f64, f64),
    Exact(f64),
    String(StringMatcher),
    Bool(bool),
    Present(bool),
    /// A list with at least one element matching.
    List(Box<ValueMatcher>),
    Or(Box<[ValueMatcher]>),
}

// === impl MetadataMatcher ===

impl MetadataMatcher {
    pub(crate) fn new(proto: &MetadataMatcherProto) -> Result<Self, RbacError> {
        if proto.filter.is_empty() {
            return Err(RbacError::Empty("filter"));
        }
        if proto.path.is_empty() {
            return Err(RbacError::Empty("path"));
        }
        let path = proto
            .path
            .iter()
            .map(|seg| match &seg.segment {
                Some(Segment::Key(k)) if !k.is_empty() => Ok(k.clone()),
                Some(Segment::Key(_)) => Err(RbacError::Empty("path key")),
                None => Err(RbacError::Unset("path segment key")),
            })
            .collect::<Result<_, _>>()?;
        let value = proto
            .value
            .as_ref()
            .ok_or(RbacError::Unset("value"))
            .and_then(ValueMatcher::new)?;
        Ok(Self {
            filter: proto.filter.clone(),
            path,
            value,
            invert: proto.invert,
        })
    }

    pub(crate) fn matches(&self, input: &Input<'_>) -> bool {
        self.value.matches(self.lookup(input)) != self.invert
    }

    /// The value at `filter` / `path`, if every step exists.
    fn lookup<'a>(&self, input: &Input<'a>) -> Option<&'a Value> {
        let mut fields = &input.metadata()?.filter_metadata.get(&self.filter)?.fields;
        let (last, init) = self.path.split_last()?;
        for key in init {
            match &fields.get(key)?.kind {
                Some(Kind::StructValue(s)) => fields = &s.fields,
                _ => return None,
            }
        }
        fields.get(last)
    }
}

// === impl ValueMatcher ===

impl ValueMatcher {
    fn new(proto: &Proto) -> Result<Self, RbacError> {
        use value_matcher::MatchPattern as P;
        Ok(match &proto.match_pattern {
            None => return Err(RbacError::Unset("value matcher")),
            Some(P::NullMatch(_)) => Self::Null,
            Some(P::DoubleMatch(d)) => Self::double(d)?,
            Some(P::StringMatch(s)) => Self::String(StringMatcher::new(s)?),
            Some(P::BoolMatch(b)) => Self::Bool(*b),
            Some(P::PresentMatch(p)) => Self::Present(*p),
            Some(P::ListMatch(l)) => Self::list(l)?,
            Some(P::OrMatch(or)) => {
                if or.value_matchers.len() < 2 {
                    return Err(RbacError::Empty(
                        "or_match (needs at least 2 value_matchers)",
                    ));
                }
                Self::Or(
                    or.value_matchers
                        .iter()
                        .map(Self::new)
                        .collect::<Result<_, _>>()?,
                )
            }
        })
    }

    fn double(d: &DoubleMatcher) -> Result<Self, RbacError> {
        match &d.match_pattern {
            Some(double_matcher::MatchPattern::Range(r)) => Ok(Self::Range(r.start, r.end)),
            Some(double_matcher::MatchPattern::Exact(e)) => Ok(Self::Exact(*e)),
            None => Err(RbacError::Unset("double_match")),
        }
    }

    fn list(l: &ListMatcher) -> Result<Self, RbacError> {
        match &l.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(v)) => Ok(Self::List(Box::new(Self::new(v)?))),
            None => Err(RbacError::Unset("list_match.one_of")),
        }
    }

    /// Whether a value matches; `None` is a value that is not set.
    fn matches(&self, value: Option<&Value>) -> bool {
        let kind = value.and_then(|v| v.kind.as_ref());
        match (self, kind) {
            (Self::Present(present), kind) => *present && kind.is_some(),
            (Self::Null, Some(Kind::NullValue(_))) => true,
            (Self::Range(start, end), Some(Kind::NumberValue(n))) => start <= n && n < end,
            (Self::Exact(e), Some(Kind::NumberValue(n))) => e == n,
            (Self::String(m), Some(Kind::StringValue(s))) => m.matches(s),
            (Self::Bool(b), Some(Kind::BoolValue(v))) => b == v,
            (Self::List(one_of), Some(Kind::ListValue(list))) => {
                list.values.iter().any(|v| one_of.matches(Some(v)))
            }
            (Self::Or(any), _) => any.iter().any(|m| m.matches(value)),
            _ => false,
        }
    }
}
