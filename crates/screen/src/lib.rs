//! Rendering a vt100 screen the way `tmux capture-pane` does: one line per row, scrollback above. The
//! pty target renders its own terminal with it, the Kubernetes target a container's output.

use mahavishnu_core::ScreenOptions;

/// Renders the parser's screen (and scrollback on request) as text, a line per row.
pub fn render(parser: &mut vt100::Parser, options: ScreenOptions) -> String {
    let rows = usize::from(parser.screen().size().0.get());
    let mut lines = Vec::new();
    if options.scrollback {
        let screen = parser.screen_mut();
        let mut offset = screen.scrollback_len();
        while offset > 0 {
            screen.set_scrollback(offset);
            let take = offset.min(rows);
            lines.extend(visible_rows(screen, options.ansi).into_iter().take(take));
            offset -= take;
        }
        screen.set_scrollback(0);
    }
    lines.extend(visible_rows(parser.screen(), options.ansi));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn visible_rows(screen: &vt100::Screen, ansi: bool) -> Vec<String> {
    let cols = screen.size().1.get();
    if ansi {
        screen.rows_formatted(0, cols).collect()
    } else {
        screen
            .rows(0, cols)
            .map(|row| row.trim_end().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(n: u16) -> std::num::NonZeroU16 {
        std::num::NonZeroU16::new(n).unwrap()
    }

    #[test]
    fn renders_rows_and_the_scrollback_above_them() {
        let mut parser = vt100::Parser::new(size(3), size(20), 100);
        for n in 1..=6 {
            parser.process(format!("line {n}\r\n").as_bytes());
        }
        assert_eq!(
            render(&mut parser, ScreenOptions::default()),
            "line 5\nline 6\n\n"
        );
        let all = render(
            &mut parser,
            ScreenOptions {
                scrollback: true,
                ansi: false,
            },
        );
        assert_eq!(all, "line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n\n");
        assert_eq!(parser.screen().scrollback(), 0);
    }

    #[test]
    fn ansi_keeps_the_colours() {
        let mut parser = vt100::Parser::new(size(2), size(20), 0);
        parser.process(b"\x1b[31mred\x1b[0m plain");
        let text = render(
            &mut parser,
            ScreenOptions {
                scrollback: false,
                ansi: true,
            },
        );
        assert!(text.contains("\x1b[31m"), "{text:?}");
        assert!(render(&mut parser, ScreenOptions::default()).starts_with("red plain\n"));
    }
}
