//! What install and uninstall print: one line per thing done; progress
//! redrawn in place on a terminal, a plain line per change otherwise (a
//! log or a CI job gets no carriage returns).

use std::io::Write;

/// Erases the current terminal line and returns to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

pub struct Printer<W: Write> {
    out: W,
    terminal: bool,
    /// A progress line is on screen and the next write replaces it.
    transient: bool,
}

impl<W: Write> Printer<W> {
    /// `terminal`: whether `out` is a terminal (progress is redrawn in place).
    pub fn new(out: W, terminal: bool) -> Self {
        Printer {
            out,
            terminal,
            transient: false,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// A line that stays. Output errors are ignored: a closed stdout must
    /// not stop an install halfway.
    pub fn line(&mut self, text: &str) {
        if std::mem::take(&mut self.transient) {
            let _ = write!(self.out, "{CLEAR_LINE}");
        }
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// A progress line: on a terminal it replaces the previous one and the
    /// next line replaces it; elsewhere it is a plain line (callers print
    /// it only when it changed).
    pub fn progress(&mut self, text: &str) {
        if self.terminal {
            let _ = write!(self.out, "{CLEAR_LINE}{text}");
            let _ = self.out.flush();
            self.transient = true;
        } else {
            self.line(text);
        }
    }

    /// Clears a progress line left on screen (before an error is printed
    /// to stderr).
    pub fn finish(&mut self) {
        if std::mem::take(&mut self.transient) {
            let _ = write!(self.out, "{CLEAR_LINE}");
            let _ = self.out.flush();
        }
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_output_has_no_control_characters() {
        let mut printer = Printer::new(Vec::new(), false);
        printer.line("a");
        printer.progress("waiting 1");
        printer.progress("waiting 2");
        printer.line("b");
        printer.finish();
        let text = String::from_utf8(printer.into_inner()).unwrap();
        assert_eq!(text, "a\nwaiting 1\nwaiting 2\nb\n");
    }

    #[test]
    fn terminal_progress_is_redrawn_in_place() {
        let mut printer = Printer::new(Vec::new(), true);
        printer.progress("waiting 1");
        printer.progress("waiting 2");
        printer.line("done");
        printer.progress("waiting 3");
        printer.finish();
        let text = String::from_utf8(printer.into_inner()).unwrap();
        assert_eq!(
            text,
            "\r\x1b[2Kwaiting 1\r\x1b[2Kwaiting 2\r\x1b[2Kdone\n\r\x1b[2Kwaiting 3\r\x1b[2K"
        );
    }
}
