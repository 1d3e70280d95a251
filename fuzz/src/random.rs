//! Structure-aware generators and mutators. Without coverage feedback (stable Rust has no
//! sanitizer coverage) the driver relies on these to reach deep structures: JSON nested to
//! the parser's limit, long chains and nested `_has`, thousands of parameters, huge
//! numbers, odd Unicode and percent-encoding.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// The random source of one worker: deterministic for a seed, so a run can be repeated.
pub struct Gen {
    pub rng: StdRng,
}

/// Strings that break naive parsers: escapes, separators, Unicode edge cases.
pub const ODD_STRINGS: &[&str] = &[
    "",
    " ",
    "\\",
    "\\|",
    "\\,",
    "\\$",
    "|",
    ",",
    "$",
    ":",
    ".",
    "..",
    "=",
    "&",
    "%",
    "%2",
    "%zz",
    "%FF",
    "%C3%28",
    "%00",
    "+",
    "\u{0}",
    "\u{7f}",
    "\u{ad}",
    "\u{200b}",
    "\u{202e}",
    "\u{fffd}",
    "\u{feff}",
    "\u{10ffff}",
    "e\u{301}",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "ß",
    "İ",
    "ﬃ",
    "😀",
    "\n\r\t",
    "null",
    "true",
    "-0",
    "1e999999",
    "-1e-999999",
    "99999999999999999999999999999999999999",
    "0.000000000000000000000000000000000001",
    "NaN",
    "Infinity",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "0000-00-00",
    "9999-12-31T23:59:60.999999999+14:00",
    "2013-01-14T10:00:00-25:99",
    "2013-02-30",
    "1970",
    "-2013",
];

pub const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.5",
    ".5",
    "5.",
    "1e3",
    "1E-3",
    "1e309",
    "1e-400",
    "123456789012345678901234567890",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "4294967296",
    "2147483648",
    "0.30000000000000004",
    "1.7976931348623157e308",
];

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn chance(&mut self, one_in: u32) -> bool {
        self.rng.gen_ratio(1, one_in.max(1))
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.rng.gen_range(0..n) }
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.rng).expect("a non-empty list")
    }

    /// A size: mostly small, sometimes in the thousands (where limits and recursion live).
    pub fn size(&mut self) -> usize {
        match self.below(20) {
            0 => self.rng.gen_range(500..6000),
            1..=3 => self.rng.gen_range(20..200),
            _ => self.rng.gen_range(0..6),
        }
    }

    /// How many children a generated JSON node has: few, so that trees stay small.
    fn children(&mut self) -> usize {
        if self.chance(10) {
            self.rng.gen_range(0..64)
        } else {
            self.rng.gen_range(0..4)
        }
    }

    /// A string: an identifier, an odd string, random Unicode, or a long repetition.
    pub fn string(&mut self) -> String {
        match self.below(8) {
            0 => self.pick(ODD_STRINGS).to_string(),
            1 => self.pick(NUMBERS).to_string(),
            2 => (0..self.size())
                .map(|_| self.rng.r#gen::<char>())
                .collect::<String>(),
            3 => self.pick(ODD_STRINGS).repeat(self.size()),
            _ => {
                let len = self.rng.gen_range(0..12);
                (0..len)
                    .map(|_| *self.pick(b"abcxyzABC0189-_./:|$,") as char)
                    .collect()
            }
        }
    }

    /// A JSON number, from the edges of i64/u64/f64.
    pub fn number(&mut self) -> Value {
        match self.below(4) {
            0 => json!(self.rng.r#gen::<i64>()),
            1 => json!(self.rng.r#gen::<u64>()),
            2 => json!(self.rng.r#gen::<f64>() * 10f64.powi(self.rng.gen_range(-300..300))),
            _ => serde_json::from_str::<Value>(self.pick::<&str>(NUMBERS)).unwrap_or(json!(0)),
        }
    }

    /// A JSON value of at most `depth` levels.
    pub fn json(&mut self, depth: usize) -> Value {
        let leaf = depth == 0 || self.chance(3);
        match (leaf, self.below(6)) {
            (true, 0) => Value::Null,
            (true, 1) => Value::Bool(self.rng.r#gen()),
            (true, 2) => self.number(),
            (true, _) => Value::String(self.string()),
            (false, 0..=2) => {
                let n = self.children();
                Value::Array((0..n).map(|_| self.json(depth - 1)).collect())
            }
            (false, _) => {
                let n = self.children();
                let mut map = Map::new();
                for _ in 0..n {
                    let key = if self.chance(2) {
                        self.pick(FHIR_KEYS).to_string()
                    } else {
                        self.string()
                    };
                    map.insert(key, self.json(depth - 1));
                }
                Value::Object(map)
            }
        }
    }

    /// Nesting to about the depth the JSON parser accepts (128) and beyond.
    pub fn deep_json(&mut self) -> String {
        let depth = *self.pick(&[64usize, 120, 127, 128, 129, 1000, 100_000]);
        let (open, close) = if self.chance(2) {
            ("[", "]")
        } else {
            ("{\"a\":", "}")
        };
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    }

    /// Mutates a JSON value in place: replaces, deletes, duplicates or retypes one node.
    pub fn mutate_json(&mut self, value: &mut Value) {
        let pointer = self.pointer_into(value);
        let node = value
            .pointer_mut(&pointer)
            .expect("the pointer was taken from the value");
        match self.below(6) {
            0 => *node = self.json(3),
            1 => {
                let copy = node.clone();
                *node = json!([copy.clone(), copy]);
            }
            2 => {
                if let Value::Object(map) = node {
                    let key = self.pick(FHIR_KEYS).to_string();
                    let v = self.json(2);
                    map.insert(key, v);
                }
            }
            3 => {
                if let Value::Array(items) = node {
                    items.clear();
                } else if let Value::Object(map) = node {
                    let i = self.below(map.len());
                    if let Some(k) = map.keys().nth(i).cloned() {
                        map.remove(&k);
                    }
                }
            }
            4 => *node = Value::String(self.string()),
            _ => *node = self.number(),
        }
    }

    /// A JSON Pointer to a random node of `value`, a few levels down.
    fn pointer_into(&mut self, value: &Value) -> String {
        let mut pointer = String::new();
        let mut node = value;
        for _ in 0..self.below(8) {
            let (key, next) = match node {
                Value::Array(items) if !items.is_empty() => {
                    let i = self.below(items.len());
                    (i.to_string(), &items[i])
                }
                Value::Object(map) if !map.is_empty() => {
                    let (k, v) = map.iter().nth(self.below(map.len())).expect("in range");
                    (k.replace('~', "~0").replace('/', "~1"), v)
                }
                _ => break,
            };
            pointer.push('/');
            pointer.push_str(&key);
            node = next;
        }
        pointer
    }

    /// Byte-level mutations, stacked: the classic operators plus dictionary tokens.
    pub fn mutate_bytes(&mut self, data: &mut Vec<u8>, dictionary: &[&str], other: &[u8]) {
        for _ in 0..self.rng.gen_range(1..6) {
            let at = self.below(data.len() + 1);
            match self.below(9) {
                0 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] ^= 1 << self.below(8);
                }
                1 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] = self.rng.r#gen();
                }
                2 if at < data.len() => {
                    let end = (at + self.rng.gen_range(1..32)).min(data.len());
                    data.drain(at..end);
                }
                3 if at < data.len() => {
                    let end = (at + self.rng.gen_range(1..64)).min(data.len());
                    let chunk = data[at..end].to_vec();
                    let times = if self.chance(8) { self.size() } else { 1 };
                    for _ in 0..times.min(4096) {
                        data.splice(at..at, chunk.iter().copied());
                    }
                }
                4 | 5 if !dictionary.is_empty() => {
                    let token = self.pick(dictionary).as_bytes().to_vec();
                    data.splice(at..at, token);
                }
                6 => {
                    let token = self.pick(ODD_STRINGS).as_bytes().to_vec();
                    data.splice(at..at, token);
                }
                7 if !other.is_empty() => {
                    let from = self.below(other.len());
                    let end = (from + self.rng.gen_range(1..256)).min(other.len());
                    data.truncate(at);
                    data.extend_from_slice(&other[from..end]);
                }
                _ => {
                    let token = self.pick(NUMBERS).as_bytes().to_vec();
                    data.splice(at..at, token);
                }
            }
        }
    }
}

/// Keys of FHIR resources and data types, so that generated objects hit the paths the
/// search definitions follow.
pub const FHIR_KEYS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "extension",
    "url",
    "valueString",
    "valueQuantity",
    "valueReference",
    "valueCodeableConcept",
    "valueDateTime",
    "valuePeriod",
    "value",
    "code",
    "system",
    "coding",
    "text",
    "identifier",
    "subject",
    "patient",
    "reference",
    "name",
    "family",
    "given",
    "telecom",
    "address",
    "effectiveDateTime",
    "effectivePeriod",
    "start",
    "end",
    "component",
    "contained",
    "status",
    "category",
    "date",
    "low",
    "high",
    "unit",
    "entry",
    "resource",
    "request",
    "method",
    "fullUrl",
    "ifMatch",
    "ifNoneExist",
    "type",
    "target",
    "birthDate",
    "onsetAge",
    "probability",
];
