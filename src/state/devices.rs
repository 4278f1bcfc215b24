//! A fleet's devices as the state holds them: each device packed into one compact row, the
//! same text the state file stores on one line, and unpacked into a [`DeviceState`] when it
//! is read.
//!
//! Why: unpacked, a device's five records and applied settings take about 10 KB of memory
//! (a dozen strings and seven B-tree maps of JSON values), so a 100,000-device state took
//! 1 GB and loading it 1.8 GB (docs/state.md, "State at scale"). Packed it is one string of
//! about 1 KB, and loading or saving the state copies rows instead of building and walking
//! a million maps.
//!
//! A row is a JSON array `[vars, records, applied]`:
//! - `vars`: strings that recur in the device's other strings (an ARN prefix such as
//!   `arn:aws:iot:us-east-1:123456789012:`, a certificate id), written once;
//! - `records`: one array per record, `[key, kind, phase, name, arn, id, intent_at_ms, data]`,
//!   phase 0 intent / 1 created / 2 borrowed, absent fields `null`, trailing ones left out;
//! - `applied`: the applied settings as they are (`{}` when none).
//!
//! In the name, arn, id, data values and applied values (not in keys, kinds or map keys),
//! `$t` stands for the device's own name, `$0`–`$9` for a var, and `$$` for a `$`. Packing
//! is deterministic, so equal devices have equal rows.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::{DeviceState, Phase, Record};

/// One device packed: the compact JSON text of its row. Shared, not copied, when the state
/// is cloned (a run snapshots the state a few times).
#[derive(Clone, PartialEq, Eq)]
pub struct Row(Arc<str>);

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The most vars a row has: one digit each.
const MAX_VARS: usize = 10;
/// Shorter names are not replaced by `$t` (it would not make the row shorter).
const MIN_NAME: usize = 4;
/// Record ids shorter than this are not worth a var.
const MIN_ID_VAR: usize = 16;

impl Row {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Packs `device`'s entry (the device's name is the `$t` of its strings).
    pub fn pack(name: &str, d: &DeviceState) -> Row {
        let vars = choose_vars(d);
        let t = Templater {
            name: (name.len() >= MIN_NAME).then_some(name),
            vars: &vars,
        };
        let mut out = Vec::with_capacity(1024);
        let mut ser = serde_json::Serializer::new(&mut out);
        let row = RowOut { t: &t, d };
        row.serialize(&mut ser).expect("a row serialises");
        Row(Arc::from(String::from_utf8(out).expect("JSON is UTF-8")))
    }

    /// A row read from a file or a journal line, checked: every row held can be unpacked.
    pub fn parse(text: &str) -> Result<Row, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        RowCheck.deserialize(&mut de)?;
        de.end()?;
        Ok(Row(text.into()))
    }

    /// The device's entry. Rows are checked when they are read, so this cannot fail.
    pub fn unpack(&self, name: &str) -> DeviceState {
        let raw: RowIn = serde_json::from_str(&self.0).expect("rows are checked when read");
        let vars: Vec<String> = raw.0.into_iter().map(Cow::into_owned).collect();
        let x = Expander { name, vars: &vars };
        let records = raw
            .1
            .into_iter()
            .map(|r| Record {
                key: r.0.into_owned(),
                kind: r.1.into_owned(),
                phase: match r.2 {
                    0 => Phase::Intent,
                    1 => Phase::Created,
                    _ => Phase::Borrowed,
                },
                name: x.string(&r.3),
                arn: r.4.map(|s| x.string(&s)),
                id: r.5.map(|s| x.string(&s)),
                intent_at_ms: r.6,
                data: r.7.into_iter().map(|(k, v)| (k, x.value(v))).collect(),
            })
            .collect();
        let applied = raw
            .2
            .into_iter()
            .map(|(k, fields)| {
                let fields = fields.into_iter().map(|(f, v)| (f, x.value(v))).collect();
                (k, fields)
            })
            .collect();
        DeviceState { records, applied }
    }
}

/// The strings worth writing once: ARN prefixes (up to the account's colon) and long record
/// ids, when they occur in at least two of the device's strings.
fn choose_vars(d: &DeviceState) -> Vec<String> {
    let mut candidates: Vec<&str> = Vec::new();
    for r in &d.records {
        if let Some(prefix) = r.arn.as_deref().and_then(arn_prefix) {
            candidates.push(prefix);
        }
        if let Some(id) = r.id.as_deref().filter(|i| i.len() >= MIN_ID_VAR) {
            candidates.push(id);
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    let mut vars: Vec<String> = candidates
        .into_iter()
        .filter(|c| occurrences(d, c) >= 2)
        .map(str::to_string)
        .collect();
    // Longest first, so that the longest match wins where one var contains another.
    vars.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    vars.truncate(MAX_VARS);
    vars
}

/// `arn:partition:service:region:account:` of an ARN.
fn arn_prefix(arn: &str) -> Option<&str> {
    if !arn.starts_with("arn:") {
        return None;
    }
    let mut colons = arn.match_indices(':').map(|(i, _)| i);
    let end = colons.nth(4)?;
    Some(&arn[..=end])
}

/// In how many of the device's templated strings `s` occurs.
fn occurrences(d: &DeviceState, s: &str) -> usize {
    fn in_value(v: &Value, s: &str) -> usize {
        match v {
            Value::String(x) => usize::from(x.contains(s)),
            Value::Array(a) => a.iter().map(|v| in_value(v, s)).sum(),
            Value::Object(o) => o.values().map(|v| in_value(v, s)).sum(),
            _ => 0,
        }
    }
    let mut n = 0;
    for r in &d.records {
        for x in [Some(&r.name), r.arn.as_ref(), r.id.as_ref()]
            .into_iter()
            .flatten()
        {
            n += usize::from(x.contains(s));
        }
        n += r.data.values().map(|v| in_value(v, s)).sum::<usize>();
    }
    for fields in d.applied.values() {
        n += fields.values().map(|v| in_value(v, s)).sum::<usize>();
    }
    n
}

struct Templater<'a> {
    name: Option<&'a str>,
    vars: &'a [String],
}

impl Templater<'_> {
    fn string(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        'next: while let Some(c) = rest.chars().next() {
            for (i, v) in self.vars.iter().enumerate() {
                if rest.starts_with(v.as_str()) {
                    out.push('$');
                    out.push(char::from(b'0' + i as u8));
                    rest = &rest[v.len()..];
                    continue 'next;
                }
            }
            if let Some(name) = self.name.filter(|n| rest.starts_with(n)) {
                out.push_str("$t");
                rest = &rest[name.len()..];
                continue;
            }
            if c == '$' {
                out.push('$');
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

struct Expander<'a> {
    name: &'a str,
    vars: &'a [String],
}

impl Expander<'_> {
    fn string(&self, s: &str) -> String {
        if !s.contains('$') {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len() + 64);
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '$' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('$') => out.push('$'),
                Some('t') => out.push_str(self.name),
                Some(d @ '0'..='9') => out.push_str(&self.vars[d as usize - '0' as usize]),
                _ => unreachable!("rows are checked when read"),
            }
        }
        out
    }

    fn value(&self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|v| self.value(v)).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, self.value(v))).collect())
            }
            other => other,
        }
    }
}

/// Whether `s` is a valid templated string for a row with `vars` vars.
fn valid_template(s: &str, vars: usize) -> bool {
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'$' {
            match bytes.next() {
                Some(b'$' | b't') => {}
                Some(d @ b'0'..=b'9') if usize::from(d - b'0') < vars => {}
                _ => return false,
            }
        }
    }
    true
}

// ---- writing a row ----

struct RowOut<'a> {
    t: &'a Templater<'a>,
    d: &'a DeviceState,
}

impl Serialize for RowOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(3))?;
        seq.serialize_element(self.t.vars)?;
        let records: Vec<RecordOut> = self
            .d
            .records
            .iter()
            .map(|r| RecordOut { t: self.t, r })
            .collect();
        seq.serialize_element(&records)?;
        let applied: BTreeMap<&str, BTreeMap<&str, TemplatedValue>> = self
            .d
            .applied
            .iter()
            .map(|(k, fields)| {
                let fields = fields
                    .iter()
                    .map(|(f, v)| (f.as_str(), TemplatedValue { t: self.t, v }))
                    .collect();
                (k.as_str(), fields)
            })
            .collect();
        seq.serialize_element(&applied)?;
        seq.end()
    }
}

struct RecordOut<'a> {
    t: &'a Templater<'a>,
    r: &'a Record,
}

impl Serialize for RecordOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.r;
        // Trailing fields left out when absent.
        let len = if !r.data.is_empty() {
            8
        } else if r.intent_at_ms.is_some() {
            7
        } else if r.id.is_some() {
            6
        } else if r.arn.is_some() {
            5
        } else {
            4
        };
        let mut seq = s.serialize_seq(Some(len))?;
        seq.serialize_element(&r.key)?;
        seq.serialize_element(&r.kind)?;
        seq.serialize_element(&match r.phase {
            Phase::Intent => 0u8,
            Phase::Created => 1,
            Phase::Borrowed => 2,
        })?;
        seq.serialize_element(&self.t.string(&r.name))?;
        if len > 4 {
            seq.serialize_element(&r.arn.as_deref().map(|a| self.t.string(a)))?;
        }
        if len > 5 {
            seq.serialize_element(&r.id.as_deref().map(|i| self.t.string(i)))?;
        }
        if len > 6 {
            seq.serialize_element(&r.intent_at_ms)?;
        }
        if len > 7 {
            let data: BTreeMap<&str, TemplatedValue> = r
                .data
                .iter()
                .map(|(k, v)| (k.as_str(), TemplatedValue { t: self.t, v }))
                .collect();
            seq.serialize_element(&data)?;
        }
        seq.end()
    }
}

struct TemplatedValue<'a> {
    t: &'a Templater<'a>,
    v: &'a Value,
}

impl Serialize for TemplatedValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.v {
            Value::String(x) => s.serialize_str(&self.t.string(x)),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&TemplatedValue { t: self.t, v })?;
                }
                seq.end()
            }
            Value::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, &TemplatedValue { t: self.t, v })?;
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

// ---- reading a row ----

type Fields = BTreeMap<String, Value>;

#[derive(Deserialize)]
struct RowIn<'a>(
    #[serde(borrow)] Vec<Cow<'a, str>>,
    #[serde(borrow)] Vec<RecordIn<'a>>,
    BTreeMap<String, Fields>,
);

#[derive(Deserialize)]
struct RecordIn<'a>(
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    u8,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(default, borrow)] Option<Cow<'a, str>>,
    #[serde(default, borrow)] Option<Cow<'a, str>>,
    #[serde(default)] Option<u64>,
    #[serde(default)] Fields,
);

/// Checks a row without building it: its shape, and that every templated string names only
/// vars the row has.
struct RowCheck;

impl<'de> DeserializeSeed<'de> for RowCheck {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a device row [vars, records, applied]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let vars: Vec<Cow<'de, str>> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        if vars.len() > MAX_VARS {
            return Err(de::Error::custom(format!("more than {MAX_VARS} vars")));
        }
        let n = vars.len();
        seq.next_element_seed(Each(RecordCheck(n)))?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        seq.next_element_seed(Entries(Entries(TemplateCheck(n))))?
            .ok_or_else(|| de::Error::invalid_length(2, &self))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(4, &self));
        }
        Ok(())
    }
}

/// A sequence whose elements each pass the inner check.
#[derive(Clone, Copy)]
struct Each<T>(T);

impl<'de, T: DeserializeSeed<'de, Value = ()> + Copy> DeserializeSeed<'de> for Each<T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeSeed<'de, Value = ()> + Copy> Visitor<'de> for Each<T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.0)?.is_some() {}
        Ok(())
    }
}

/// A map of string keys whose values each pass the inner check.
#[derive(Clone, Copy)]
struct Entries<T>(T);

impl<'de, T: DeserializeSeed<'de, Value = ()> + Copy> DeserializeSeed<'de> for Entries<T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeSeed<'de, Value = ()> + Copy> Visitor<'de> for Entries<T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<Cow<'de, str>>()?.is_some() {
            map.next_value_seed(self.0)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct RecordCheck(usize);

impl<'de> DeserializeSeed<'de> for RecordCheck {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record [key, kind, phase, name, arn, id, intent_at_ms, data]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let n = self.0;
        for i in 0..2 {
            seq.next_element::<Cow<'de, str>>()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        let phase: u8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(2, &self))?;
        if phase > 2 {
            return Err(de::Error::custom(format!("phase {phase} is not 0, 1 or 2")));
        }
        seq.next_element_seed(Str(n))?
            .ok_or_else(|| de::Error::invalid_length(3, &self))?;
        // The optional tail: arn, id, intent_at_ms, data.
        if seq.next_element_seed(Nullable(Str(n)))?.is_none()
            || seq.next_element_seed(Nullable(Str(n)))?.is_none()
            || seq.next_element::<Option<u64>>()?.is_none()
            || seq.next_element_seed(Entries(TemplateCheck(n)))?.is_none()
        {
            return Ok(());
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(9, &self));
        }
        Ok(())
    }
}

/// A templated string.
#[derive(Clone, Copy)]
struct Str(usize);

impl<'de> DeserializeSeed<'de> for Str {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        if valid_template(&s, self.0) {
            Ok(())
        } else {
            Err(de::Error::custom(format!("bad `$` in {s:?}")))
        }
    }
}

/// null or the inner check.
#[derive(Clone, Copy)]
struct Nullable<T>(T);

impl<'de, T: DeserializeSeed<'de, Value = ()>> DeserializeSeed<'de> for Nullable<T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: DeserializeSeed<'de, Value = ()>> Visitor<'de> for Nullable<T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a string")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

/// Any JSON value whose strings, at any depth, are valid templates.
#[derive(Clone, Copy)]
struct TemplateCheck(usize);

impl<'de> DeserializeSeed<'de> for TemplateCheck {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TemplateCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        if valid_template(s, self.0) {
            Ok(())
        } else {
            Err(E::custom(format!("bad `$` in {s:?}")))
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Each(self).visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Entries(self).visit_map(map)
    }
}

// ---- the devices of a state ----

/// A fleet's devices by thing name, each held packed. Reading a device unpacks a copy of it
/// ([`Devices::get`]); a change is made by putting the changed copy back
/// ([`Devices::insert`]), which is what [`super::Store::update_device`] does.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Devices {
    rows: BTreeMap<String, Row>,
}

impl fmt::Debug for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.rows.iter()).finish()
    }
}

impl Devices {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.rows.contains_key(name)
    }
    /// The thing names, in order.
    pub fn keys(&self) -> std::collections::btree_map::Keys<'_, String, Row> {
        self.rows.keys()
    }
    /// A copy of the device's entry.
    pub fn get(&self, name: &str) -> Option<DeviceState> {
        self.rows.get(name).map(|r| r.unpack(name))
    }
    /// Records (or replaces) the device's entry.
    pub fn insert(&mut self, name: String, d: DeviceState) {
        let row = Row::pack(&name, &d);
        self.rows.insert(name, row);
    }
    pub fn remove(&mut self, name: &str) -> Option<DeviceState> {
        self.rows.remove(name).map(|r| r.unpack(name))
    }
    /// Every device, unpacked one at a time.
    pub fn iter(&self) -> impl Iterator<Item = (&String, DeviceState)> + '_ {
        self.rows.iter().map(|(n, r)| (n, r.unpack(n)))
    }
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.get(name)
    }
    pub fn rows(&self) -> impl ExactSizeIterator<Item = (&String, &Row)> + '_ {
        self.rows.iter()
    }
    pub fn insert_row(&mut self, name: String, row: Row) {
        self.rows.insert(name, row);
    }
    pub fn remove_row(&mut self, name: &str) {
        self.rows.remove(name);
    }
}

impl<'a> IntoIterator for &'a Devices {
    type Item = (&'a String, DeviceState);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, DeviceState)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// As stored: each device's row by name (what `state pull` prints).
impl Serialize for Devices {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.rows.len()))?;
        for (name, row) in &self.rows {
            let v: Value = serde_json::from_str(row.as_str()).expect("rows are JSON");
            map.serialize_entry(name, &v)?;
        }
        map.end()
    }
}

/// The devices of a state file laid out other than one per line (edited by hand, or
/// reformatted): each row read as JSON, then checked.
impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Devices, D::Error> {
        let raw: BTreeMap<String, Value> = BTreeMap::deserialize(d)?;
        let mut devices = Devices::default();
        for (name, v) in raw {
            let row = Row::parse(&v.to_string())
                .map_err(|e| de::Error::custom(format!("device {name}: {e}")))?;
            devices.insert_row(name, row);
        }
        Ok(devices)
    }
}

/// Schema 1–3 devices (one object per device), packed as they are read.
pub(super) struct UnpackedDevices(pub Devices);

impl<'de> Deserialize<'de> for UnpackedDevices {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<UnpackedDevices, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UnpackedDevices;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the devices by name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UnpackedDevices, A::Error> {
                let mut devices = Devices::default();
                while let Some((name, d)) = map.next_entry::<String, DeviceState>()? {
                    devices.insert(name, d);
                }
                Ok(UnpackedDevices(devices))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, name: &str) -> Record {
        Record::new(key, key, Phase::Created, name)
    }

    #[test]
    fn a_device_round_trips_through_its_row() {
        let d = super::super::bench::device(42);
        let name = super::super::bench::device_name(42);
        let row = Row::pack(&name, &d);
        assert_eq!(row.unpack(&name), d);
        // Checked as a file's row, it is the same row.
        assert_eq!(Row::parse(row.as_str()).unwrap(), row);
        // The certificate's id and the ARN prefix are written once, the name not at all.
        let text = row.as_str();
        let cert = d.get("certificate").unwrap().id.clone().unwrap();
        assert_eq!(text.matches(&cert).count(), 1, "{text}");
        assert_eq!(text.matches("arn:aws:iot:").count(), 1, "{text}");
        assert!(!text.contains(&name), "{text}");
        assert!(
            text.len() * 3 < serde_json::to_string(&d).unwrap().len() * 2,
            "{text}"
        );
    }

    #[test]
    fn odd_strings_round_trip() {
        let mut d = DeviceState::default();
        let mut r = record("thing", "$t$0$$ $x dev-1dev-1");
        r.arn = Some("arn:aws:iot:r:1:thing/dev-1".into());
        r.id = Some("$".repeat(20));
        r.intent_at_ms = Some(u64::MAX);
        r.data.insert(
            "nested".into(),
            serde_json::json!({"a": ["dev-1", "$1", 1.5, null, true], "b": {"c": "arn:aws:iot:r:1:x"}}),
        );
        d.put(r);
        let mut other = record("b", "x");
        other.arn = Some("arn:aws:iot:r:1:thing/dev-1".into());
        other.id = Some("$".repeat(20));
        other.phase = Phase::Borrowed;
        d.put(other);
        d.put(Record::new("c", "c", Phase::Intent, ""));
        d.applied.insert(
            "thing".into(),
            [("attributes.x".to_string(), Value::from("dev-1 $ é"))].into(),
        );
        d.applied.insert("empty".into(), BTreeMap::new());
        for name in ["dev-1", "d", "$t", "é-dev"] {
            let row = Row::pack(name, &d);
            assert_eq!(row.unpack(name), d, "{name}: {}", row.as_str());
            assert_eq!(Row::parse(row.as_str()).unwrap(), row);
        }
    }

    #[test]
    fn bad_rows_are_refused() {
        for bad in [
            "",
            "{}",
            "[[], []]",
            "[[], [], {}, 1]",
            r#"[[], [["k", "k", 3, "n"]], {}]"#,
            r#"[[], [["k", "k", 1]], {}]"#,
            r#"[[], [["k", "k", 1, "$0"]], {}]"#,
            r#"[["a"], [["k", "k", 1, "$1"]], {}]"#,
            r#"[[], [["k", "k", 1, "n", null, null, null, {"x": "$"}]], {}]"#,
            r#"[[], [["k", "k", 1, "n", 5]], {}]"#,
            r#"[[], [], {"thing": {"a": ["$z"]}}]"#,
            r#"[[], [], {"thing": 1}]"#,
            r#"[[], [], {}] x"#,
        ] {
            assert!(Row::parse(bad).is_err(), "{bad}");
        }
        let ok = r#"[["a"], [["k", "k", 1, "$0", null, "i"]], {"thing": {"a": ["$$", 1]}}]"#;
        let row = Row::parse(ok).unwrap();
        assert_eq!(row.unpack("n").records[0].name, "a");
    }

    #[test]
    fn devices_behave_like_a_map() {
        let mut ds = Devices::default();
        let d = super::super::bench::device(1);
        ds.insert("b".into(), d.clone());
        ds.insert("a".into(), DeviceState::default());
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ds.get("b"), Some(d.clone()));
        assert!(ds.contains_key("a") && !ds.contains_key("c"));
        assert_eq!(ds.remove("a"), Some(DeviceState::default()));
        assert_eq!(ds.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), ["b"]);
        let json = serde_json::to_string(&ds).unwrap();
        let back: Devices = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ds);
    }
}
