//! A line diff for showing how a file changed (small files: configuration) and for telling which
//! lines of a screen are new.

/// The lines of `after` that differ from `before`: removed lines with `-`, added ones with `+`, and
/// up to one unchanged line of context around each change (`  `), with `...` where lines are skipped.
pub fn lines(before: &str, after: &str) -> String {
    let steps = steps(before, after);
    let changed = |index: usize| steps.get(index).is_some_and(|(mark, _)| *mark != "  ");
    let mut out = String::new();
    let mut skipped = false;
    for (index, (mark, line)) in steps.iter().enumerate() {
        let near = changed(index) || changed(index + 1) || index > 0 && changed(index - 1);
        if near {
            if skipped && !out.is_empty() {
                out.push_str("...\n");
            }
            skipped = false;
            out.push_str(mark);
            out.push_str(line);
            out.push('\n');
        } else {
            skipped = true;
        }
    }
    out
}

/// The lines of `after` that are not in `before` (added or changed), in order: what a screen shows
/// that it did not show before, wherever the rest moved to.
pub fn added_lines<'a>(before: &'a str, after: &'a str) -> Vec<&'a str> {
    steps(before, after)
        .into_iter()
        .filter(|(mark, _)| *mark == "+ ")
        .map(|(_, line)| line)
        .collect()
}

/// The edit from `before` to `after`, line by line: `  ` kept, `- ` removed, `+ ` added.
fn steps<'a>(before: &'a str, after: &'a str) -> Vec<(&'static str, &'a str)> {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    // Longest common subsequence, by dynamic programming: configuration files and screens are small.
    // Larger inputs are taken whole, as removed and added.
    if old.len().saturating_mul(new.len()) > 4_000_000 {
        return old
            .iter()
            .map(|line| ("- ", *line))
            .chain(new.iter().map(|line| ("+ ", *line)))
            .collect();
    }
    let mut common = vec![vec![0u32; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let mut steps = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            steps.push(("  ", old[i]));
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            steps.push(("- ", old[i]));
            i += 1;
        } else {
            steps.push(("+ ", new[j]));
            j += 1;
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    #[test]
    fn shows_changed_lines_with_a_little_context() {
        let before = "a\nb\nc\nd\ne\nf\n";
        let after = "a\nb\nC\nd\ne\nf\ng\n";
        assert_eq!(
            super::lines(before, after),
            "  b\n- c\n+ C\n  d\n...\n  f\n+ g\n"
        );
        assert_eq!(super::lines("same\n", "same\n"), "");
    }

    #[test]
    fn added_lines_are_new_even_when_equal_to_old_ones() {
        // A shell ran the same command again: the screen scrolled and repeats the old result.
        let before = "top\n$ echo hi\nhi\n$ \n";
        let after = "$ echo hi\nhi\n$ echo hi\nhi\n$ \n";
        assert_eq!(super::added_lines(before, after), ["$ echo hi", "hi"]);
        assert!(super::added_lines(before, before).is_empty());
    }
}
