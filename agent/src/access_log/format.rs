//! Renders an [`Entry`] with a format weft-control parsed (Envoy's
//! command operators, see `control/src/model/access_log/format.rs`): text,
//! one line, `-` for what is missing; or JSON, one object per line, with
//! numbers for numeric operators standing alone and `null` for what is
//! missing, as Envoy's JSON format does.

use http::HeaderName;
use weft_proto::telemetry::{FormatToken, JsonField};

use super::{
    entry::{Entry, Header},
    stable::{self, Reads},
};

mod op;
mod write;

pub use op::{Endpoint, GrpcStatusAs, Op};
use write::{json_string, push_one_line, truncate};

/// One step of a compiled format: literal text, then an operator (cut to
/// a number of characters, 0: no limit). Each literal run of the format
/// goes with the operator after it, so a line of Envoy's default format
/// is 24 steps, not 48 pieces (and 18 [`Piece`]s: 17 steps and a run).
#[derive(Debug)]
struct Step {
    literal: Literal,
    op: Option<(Op, usize)>,
}

/// A format's literal text between two operators. Most are a space or a
/// quote: those are kept in place and copied as one 8-byte word (a
/// `memcpy` call each, or a push per byte, was a fifth of a line's cost).
#[derive(Debug)]
enum Literal {
    /// The bytes, padded, and how many count.
    Short([u8; 8], u8),
    Long(Box<[u8]>),
}

impl Literal {
    fn new(bytes: Vec<u8>) -> Literal {
        if bytes.len() <= 8 {
            let mut short = [0; 8];
            short[..bytes.len()].copy_from_slice(&bytes);
            Literal::Short(short, bytes.len() as u8)
        } else {
            Literal::Long(bytes.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Literal::Short(bytes, len) => &bytes[..usize::from(*len)],
            Literal::Long(bytes) => bytes,
        }
    }

    /// A line is a line: not even the format's own text breaks it.
    fn without_line_breaks(&self) -> Literal {
        let mut bytes = Vec::new();
        push_one_line(&mut bytes, self.bytes());
        Literal::new(bytes)
    }

    #[inline(always)]
    fn push(&self, out: &mut Vec<u8>) {
        match self {
            Literal::Short(bytes, len) => {
                // The whole word, then the padding taken back off.
                out.extend_from_slice(bytes);
                let end = out.len() - (8 - usize::from(*len));
                out.truncate(end);
            }
            Literal::Long(bytes) => out.extend_from_slice(bytes),
        }
    }
}

fn steps(tokens: &[FormatToken]) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut literal = Vec::new();
    for t in tokens {
        if t.operator.is_empty() {
            literal.extend_from_slice(t.literal.as_bytes());
        } else {
            steps.push(Step {
                literal: Literal::new(std::mem::take(&mut literal)),
                op: Some((Op::from_token(t)?, t.max_length as usize)),
            });
        }
    }
    if !literal.is_empty() {
        steps.push(Step {
            literal: Literal::new(literal),
            op: None,
        });
    }
    Ok(steps)
}

/// A piece of a text format: a step, or a run of steps whose operators
/// seldom change from one request of a connection to the next, kept
/// rendered per thread ([`stable`]).
#[derive(Debug)]
enum Piece {
    Step(Step),
    Stable {
        /// Tells this run's kept text from every other format's.
        id: u64,
        reads: Reads,
        steps: Vec<Step>,
    },
}

/// The steps of a text format, with each run of two or more stable
/// operators in a row (and a literal at the end) made one piece.
fn pieces(steps: Vec<Step>) -> Vec<Piece> {
    fn close(run: &mut Vec<Step>, reads: Reads, pieces: &mut Vec<Piece>) {
        if run.iter().filter(|s| s.op.is_some()).count() >= 2 {
            pieces.push(Piece::Stable {
                id: stable::next_run_id(),
                reads,
                steps: std::mem::take(run),
            });
        } else {
            pieces.extend(run.drain(..).map(Piece::Step));
        }
    }
    let mut pieces = Vec::new();
    let mut run = Vec::new();
    let mut reads = Reads::NOTHING;
    for step in steps {
        match step.op.as_ref().map(|(op, _)| op.stable()) {
            // The closing literal joins a run that reaches it.
            None if !run.is_empty() => run.push(step),
            Some(Some(read)) => {
                reads = reads.with(read);
                run.push(step);
            }
            _ => {
                close(&mut run, reads, &mut pieces);
                reads = Reads::NOTHING;
                pieces.push(Piece::Step(step));
            }
        }
    }
    close(&mut run, reads, &mut pieces);
    pieces
}

/// `tokens`' steps, each writing its value on one line.
fn one_line(tokens: &[FormatToken]) -> Result<Vec<Step>, String> {
    let mut steps = steps(tokens)?;
    for step in &mut steps {
        step.literal = step.literal.without_line_breaks();
        if let Some((op, _)) = &mut step.op {
            op.on_one_line();
        }
    }
    Ok(steps)
}

/// A compiled format, and the headers it prints (the only ones a logged
/// request keeps for it).
#[derive(Debug)]
pub struct Format {
    layout: Layout,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

#[derive(Debug)]
enum Layout {
    Text(Vec<Piece>),
    Json(Vec<(String, Vec<Step>)>),
    /// An OpenTelemetry log record (`envoyOtelAls`): the body, text with
    /// its line breaks as written, and string attributes.
    Otel {
        body: Vec<Piece>,
        attributes: Vec<(String, Vec<Step>)>,
    },
    /// An access-log service's entry (`envoyHttpAls`, `envoyTcpAls`):
    /// built from the entry's fields, not rendered; the format only
    /// names the headers a request keeps for it.
    Fields,
    /// A header value of a VirtualService's (Envoy's header formatters):
    /// an operator without a value adds nothing, where a line has `-`.
    Header(Vec<Step>),
}

impl Format {
    pub fn text(tokens: &[FormatToken]) -> Result<Format, String> {
        Ok(Format::new(Layout::Text(pieces(one_line(tokens)?))))
    }

    pub fn json(fields: &[JsonField]) -> Result<Format, String> {
        fields
            .iter()
            .map(|f| Ok((f.key.clone(), steps(&f.value)?)))
            .collect::<Result<_, String>>()
            .map(|fields| Format::new(Layout::Json(fields)))
    }

    /// An OpenTelemetry log record's body (a text format, its line
    /// breaks kept: a record is not a line of a file) and attributes.
    pub fn otel(body: &[FormatToken], attributes: &[JsonField]) -> Result<Format, String> {
        let attributes = attributes
            .iter()
            .map(|f| Ok((f.key.clone(), steps(&f.value)?)))
            .collect::<Result<_, String>>()?;
        Ok(Format::new(Layout::Otel {
            body: pieces(steps(body)?),
            attributes,
        }))
    }

    /// A header value with command operators (`l7/route/headers.rs`).
    pub fn header(tokens: &[FormatToken]) -> Result<Format, String> {
        Ok(Format::new(Layout::Header(one_line(tokens)?)))
    }

    /// An access-log service's entry: nothing rendered, `request` and
    /// `response` kept (see [`super::als`]).
    pub fn fields(request: Vec<HeaderName>, response: Vec<HeaderName>) -> Format {
        Format {
            layout: Layout::Fields,
            request_headers: request,
            response_headers: response,
        }
    }

    fn new(layout: Layout) -> Format {
        let mut request_headers = Vec::new();
        let mut response_headers = Vec::new();
        fn in_pieces(pieces: &[Piece]) -> Vec<&Step> {
            pieces
                .iter()
                .flat_map(|p| match p {
                    Piece::Step(step) => std::slice::from_ref(step),
                    Piece::Stable { steps, .. } => steps,
                })
                .collect()
        }
        let all: Vec<&Step> = match &layout {
            Layout::Text(pieces) => in_pieces(pieces),
            Layout::Json(fields) => fields.iter().flat_map(|(_, s)| s).collect(),
            Layout::Otel {
                body, attributes, ..
            } => in_pieces(body)
                .into_iter()
                .chain(attributes.iter().flat_map(|(_, s)| s))
                .collect(),
            Layout::Fields => Vec::new(),
            Layout::Header(steps) => steps.iter().collect(),
        };
        for step in all {
            let (names, headers) = match &step.op {
                Some((Op::Req(name, alt) | Op::ReqWithoutQuery(name, alt), _)) => {
                    ([Some(name), alt.as_ref()], &mut request_headers)
                }
                Some((Op::Resp(name, alt), _)) => {
                    ([Some(name), alt.as_ref()], &mut response_headers)
                }
                _ => continue,
            };
            for header in names.into_iter().flatten() {
                let name = match header {
                    Header::Named(name) => name.clone(),
                    // Without an `:authority`, the request's `host`.
                    Header::Authority => http::header::HOST,
                    _ => continue,
                };
                if !headers.contains(&name) {
                    headers.push(name);
                }
            }
        }
        Format {
            layout,
            request_headers,
            response_headers,
        }
    }

    /// The request headers the format prints.
    pub fn request_headers(&self) -> &[HeaderName] {
        &self.request_headers
    }

    /// The response headers the format prints.
    pub fn response_headers(&self) -> &[HeaderName] {
        &self.response_headers
    }

    /// One line, with its `\n`.
    pub fn render(&self, e: &Entry<'_>) -> String {
        let mut out = Vec::with_capacity(384);
        self.render_into(e, &mut out);
        // Every value written is a `str` or ASCII.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends one line, with its `\n`, to `out` (UTF-8: every value
    /// written is a `str` or ASCII). For an OpenTelemetry record, its
    /// body, as the format writes it.
    pub fn render_into(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        out.reserve(512);
        match &self.layout {
            Layout::Text(pieces) => render_pieces(pieces, e, out),
            Layout::Otel { body, .. } => {
                render_pieces(body, e, out);
                return;
            }
            Layout::Fields => return,
            Layout::Header(_) => {
                self.render_header(e, out);
                return;
            }
            Layout::Json(fields) => {
                out.push(b'{');
                let mut value = Vec::new();
                for (i, (key, steps)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_string(key.as_bytes(), out);
                    out.push(b':');
                    value.clear();
                    match steps.as_slice() {
                        [
                            Step {
                                literal,
                                op: Some((op, max)),
                            },
                        ] if literal.bytes().is_empty() => {
                            if !op.render(e, &mut value) {
                                out.extend_from_slice(b"null");
                                continue;
                            }
                            truncate(&mut value, 0, *max);
                            if op.numeric() {
                                out.extend_from_slice(&value);
                            } else {
                                json_string(&value, out);
                            }
                        }
                        _ => {
                            render_steps(steps, e, &mut value);
                            json_string(&value, out);
                        }
                    }
                }
                out.push(b'}');
            }
        }
        out.push(b'\n');
    }

    /// A header value's text, appended to `out`: nothing for an operator
    /// without a value (Envoy's header formatters omit empty values),
    /// nothing at all for a format that is not a header value's.
    pub fn render_header(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        let Layout::Header(steps) = &self.layout else {
            return;
        };
        for step in steps {
            step.literal.push(out);
            if let Some((op, max)) = &step.op {
                let start = out.len();
                if op.render(e, out) && *max > 0 {
                    truncate(out, start, *max);
                }
            }
        }
    }

    /// An OpenTelemetry record's attributes, each key with its value
    /// (`-` for a missing one, as Envoy writes it); none for the other
    /// layouts.
    pub fn render_attributes(&self, e: &Entry<'_>, mut each: impl FnMut(&str, &[u8])) {
        let Layout::Otel { attributes, .. } = &self.layout else {
            return;
        };
        let mut value = Vec::new();
        for (key, steps) in attributes {
            value.clear();
            render_steps(steps, e, &mut value);
            each(key, &value);
        }
    }
}

/// A text line's pieces.
fn render_pieces(pieces: &[Piece], e: &Entry<'_>, out: &mut Vec<u8>) {
    for piece in pieces {
        match piece {
            Piece::Step(step) => step.render(e, out),
            // An L4 line is its connection's only one: nothing to keep.
            Piece::Stable { steps, .. } if e.http.is_none() => render_steps(steps, e, out),
            Piece::Stable { id, reads, steps } => {
                stable::append(*id, *reads, e, out, |out| render_steps(steps, e, out));
            }
        }
    }
}

fn render_steps(steps: &[Step], e: &Entry<'_>, out: &mut Vec<u8>) {
    for step in steps {
        step.render(e, out);
    }
}

impl Step {
    #[inline(always)]
    fn render(&self, e: &Entry<'_>, out: &mut Vec<u8>) {
        self.literal.push(out);
        if let Some((op, max)) = &self.op {
            let start = out.len();
            if !op.render(e, out) {
                out.push(b'-');
            } else if *max > 0 {
                truncate(out, start, *max);
            }
        }
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
