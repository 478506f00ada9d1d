//! A reader for the Python literals Ultralytics writes into ONNX metadata
//! (`str()` of dicts, lists, tuples, numbers, strings, booleans, None):
//! `names` reads `{0: 'scratch', 1: 'dent'}`, `imgsz` reads `[640, 640]`.
//! Not JSON (single quotes, tuples, `True`), and never `eval`: anything
//! else is an error that says where.

#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    None,
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

impl Py {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Py::Int(i) => Some(*i),
            _ => None,
        }
    }
}

pub fn parse(s: &str) -> Result<Py, String> {
    let mut p = Parser { s: s.as_bytes(), i: 0, depth: 0 };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected `{}` at byte {}", p.s[p.i] as char, p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn value(&mut self) -> Result<Py, String> {
        self.depth += 1;
        if self.depth > 32 {
            return Err("nested too deeply".into());
        }
        let v = match self.peek().ok_or("unexpected end")? {
            b'{' => self.dict(),
            b'[' => self.seq(b']'),
            b'(' => self.seq(b')'),
            b'\'' | b'"' => self.string(),
            c if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => self.word(),
        };
        self.depth -= 1;
        v
    }

    fn dict(&mut self) -> Result<Py, String> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Py::Dict(items));
            }
            let k = self.value()?;
            if self.peek() != Some(b':') {
                return Err(format!("expected `:` at byte {}", self.i));
            }
            self.i += 1;
            let v = self.value()?;
            items.push((k, v));
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected `,` or `}}` at byte {}", self.i)),
            }
        }
    }

    fn seq(&mut self, close: u8) -> Result<Py, String> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(Py::List(items));
            }
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {}
                _ => return Err(format!("expected `,` or `{}` at byte {}", close as char, self.i)),
            }
        }
    }

    fn string(&mut self) -> Result<Py, String> {
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated string")?;
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                }
                c if c == quote => return String::from_utf8(out).map(Py::Str).map_err(|e| e.to_string()),
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    fn number(&mut self) -> Result<Py, String> {
        let start = self.i;
        while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
            self.i += 1;
        }
        let t = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        t.parse::<i64>()
            .map(Py::Int)
            .or_else(|_| t.parse::<f64>().map(Py::Float))
            .map_err(|_| format!("`{t}` is not a number"))
    }

    fn word(&mut self) -> Result<Py, String> {
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
            self.i += 1;
        }
        match &self.s[start..self.i] {
            b"True" => Ok(Py::Bool(true)),
            b"False" => Ok(Py::Bool(false)),
            b"None" => Ok(Py::None),
            w => Err(format!("unexpected `{}` at byte {start}", String::from_utf8_lossy(w))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_ultralytics_writes() {
        assert_eq!(
            parse("{0: 'scratch', 1: \"dent\"}").unwrap(),
            Py::Dict(vec![(Py::Int(0), Py::Str("scratch".into())), (Py::Int(1), Py::Str("dent".into()))])
        );
        assert_eq!(parse("[640, 640]").unwrap(), Py::List(vec![Py::Int(640), Py::Int(640)]));
        assert_eq!(
            parse("(1, 2.5, True, None, -3)").unwrap().clone(),
            Py::List(vec![Py::Int(1), Py::Float(2.5), Py::Bool(true), Py::None, Py::Int(-3)])
        );
        assert_eq!(parse("'it\\'s'").unwrap(), Py::Str("it's".into()));
        assert_eq!(parse("32").unwrap(), Py::Int(32));
    }

    #[test]
    fn refuses_what_is_not_a_literal() {
        for bad in ["__import__('os')", "{0: 'a'", "[1 2]", "'open", "{0 'a'}", "1 2", &"[".repeat(100)] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
