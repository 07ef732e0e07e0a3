//! A git worktree and branch per session, so that parallel agents never touch each other's files or
//! the user's work tree: create, copy files in, diff against the base, status, remove.

use std::path::{Path, PathBuf};

use mahavishnu_core::{Error, Result, WorktreeRecord};
use serde::Serialize;

use crate::checkpoint::Repository;

/// Where a session's worktree and branch will be.
pub struct Planned {
    /// The repository's main work tree.
    pub repository: Repository,
    /// The commit the worktree starts from.
    pub base: String,
    /// The new branch.
    pub branch: String,
    /// The new worktree's directory.
    pub path: PathBuf,
}

/// Checks that a worktree can be made for session `name` of the repository around `project`, from
/// `from`, and says where: every refusal names the problem and the fix.
pub fn plan(project: &Path, name: &str, from: &str, prefix: &str, root: &Path) -> Result<Planned> {
    let repository = Repository::discover(project).map_err(|_| {
        Error::Invalid(format!(
            "{} is not inside a git repository; --worktree needs one (run `git init` and commit first)",
            project.display()
        ))
    })?;
    let base = repository
        .run(
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{from}^{{commit}}"),
            ],
            None,
        )
        .map_err(|_| {
            if from == "HEAD" {
                Error::Invalid(format!(
                    "{} has no commits yet; commit once, then launch with --worktree",
                    repository.top().display()
                ))
            } else {
                Error::Invalid(format!(
                    "--from `{from}` names no commit in {}",
                    repository.top().display()
                ))
            }
        })?;
    let branch = format!("{prefix}{name}");
    if repository
        .run(&["check-ref-format", "--branch", &branch], None)
        .is_err()
    {
        return Err(Error::Invalid(format!(
            "`{branch}` cannot be a branch name; choose another --name or --branch-prefix"
        )));
    }
    if has_branch(&repository, &branch) {
        return Err(Error::Invalid(format!(
            "branch `{branch}` already exists; choose another --name or --branch-prefix, or delete the branch"
        )));
    }
    let top = repository.top().to_path_buf();
    let label = top
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repository".into());
    let hash = mahavishnu_core::status::stable_hash(top.to_string_lossy().as_bytes());
    let path = root.join(format!("{label}-{:08x}", hash as u32)).join(name);
    if path.exists() {
        return Err(Error::Invalid(format!(
            "{} already exists; it may hold someone's work, so it is left alone: move it away or choose another --name",
            path.display()
        )));
    }
    Ok(Planned {
        repository,
        base,
        branch,
        path,
    })
}

impl Planned {
    /// Creates the branch and registers the worktree, without its files yet. git's worktree bookkeeping
    /// is shared, so this must happen one worktree at a time; `populate` can then run in parallel.
    pub fn register(self) -> Result<Self> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        }
        let path = self.path.to_string_lossy().into_owned();
        let _lock = worktree_lock(&self.repository)?;
        self.repository.run(
            &[
                "worktree",
                "add",
                "--quiet",
                "--no-checkout",
                "-b",
                &self.branch,
                &path,
                &self.base,
            ],
            None,
        )?;
        Ok(self)
    }

    /// Checks out the files of a registered worktree (as `git worktree add` would), then copies `copy`
    /// (paths relative to the main work tree) in; missing files are skipped. Returns the record and the
    /// files copied.
    pub fn populate(
        self,
        copy: &[String],
        port_base: u16,
    ) -> Result<(WorktreeRecord, Vec<String>)> {
        let worktree = Repository::open(&self.path)?;
        worktree.run(&["reset", "--hard", "--quiet"], None)?;
        // The hook `git worktree add` would have run after its checkout (git 2.36 and later run it).
        let hook = worktree.run(
            &[
                "hook",
                "run",
                "--ignore-missing",
                "post-checkout",
                "--",
                "0000000000000000000000000000000000000000",
                &self.base,
                "1",
            ],
            None,
        );
        if let Err(error) = hook
            && !error.to_string().contains("is not a git command")
        {
            return Err(error);
        }
        let copied = copy_files(self.repository.top(), &self.path, copy)?;
        Ok((
            WorktreeRecord {
                path: self.path,
                branch: self.branch,
                base: self.base,
                repository: self.repository.top().to_path_buf(),
                port_base,
            },
            copied,
        ))
    }
}

/// Copies `copy` (paths relative to the main work tree `top`) into the worktree `into`; files that do
/// not exist are skipped. Returns those copied.
pub fn copy_files(top: &Path, into: &Path, copy: &[String]) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for relative in copy {
        let relative_path = Path::new(relative);
        if relative_path.is_absolute() || relative_path.components().any(|c| c.as_os_str() == "..")
        {
            return Err(Error::Invalid(format!(
                "worktree.copy entry `{relative}` must be a path inside the work tree"
            )));
        }
        let from = top.join(relative_path);
        if !from.is_file() {
            continue;
        }
        let to = into.join(relative_path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        }
        std::fs::copy(&from, &to).map_err(|e| {
            Error::io(
                format!("cannot copy {} into the worktree", from.display()),
                e,
            )
        })?;
        copied.push(relative.clone());
    }
    Ok(copied)
}

/// Pauses a worktree: its work is committed on its branch and the worktree removed; the branch stays.
pub fn stash_away(record: &WorktreeRecord) -> Result<bool> {
    let committed = commit_work_in_progress(
        record,
        &format!("Work in progress of {} (paused)", record.branch),
    )?;
    let main = main_repository(record)?;
    remove_directory(&main, record)?;
    Ok(committed)
}

/// `git worktree remove --force`: the directory and git's record of it.
fn remove_directory(main: &Repository, record: &WorktreeRecord) -> Result<()> {
    let path = record.path.to_string_lossy();
    main.run(&["worktree", "remove", "--force", &path], None)
        .map(|_| ())
}

/// Why a removed worktree cannot be made again at its old place from its branch, if it cannot: its
/// place is taken (it may hold someone's files), or the branch is gone.
pub fn can_bring_back(record: &WorktreeRecord) -> Result<Repository> {
    if record.path.exists() {
        return Err(Error::Invalid(format!(
            "{} exists, so the worktree is not made again over it; move it away and try again",
            record.path.display()
        )));
    }
    let main = main_repository(record)?;
    if !has_branch(&main, &record.branch) {
        return Err(Error::Invalid(format!(
            "branch `{}` no longer exists, so its worktree cannot be made again; `terminal close ID \
             --prune` forgets the session",
            record.branch
        )));
    }
    Ok(main)
}

/// Brings a removed worktree back at its old place, on its branch. Refuses if something is there now.
pub fn bring_back(record: &WorktreeRecord) -> Result<()> {
    let main = can_bring_back(record)?;
    let _lock = worktree_lock(&main)?;
    main.run(&["worktree", "prune"], None)?;
    main.run(
        &[
            "worktree",
            "add",
            "--quiet",
            &record.path.to_string_lossy(),
            &record.branch,
        ],
        None,
    )?;
    Ok(())
}

/// Holds the repository's worktree lock until dropped. git keeps every worktree's bookkeeping in the
/// shared git directory, and two `git worktree add` running at once (in two `mahavishnu` processes)
/// can read each other's half-written entries and fail.
fn worktree_lock(repository: &Repository) -> Result<std::fs::File> {
    let common = repository.run(
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        None,
    )?;
    let path = Path::new(common.trim()).join("mahavishnu-worktrees.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    file.lock()
        .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
    Ok(file)
}

/// Whether `repository` has a local branch `branch`.
fn has_branch(repository: &Repository, branch: &str) -> bool {
    repository
        .run(
            &[
                "show-ref",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
            None,
        )
        .is_ok()
}

/// The main work tree a worktree session came from (its top is on record).
fn main_repository(record: &WorktreeRecord) -> Result<Repository> {
    Repository::open(&record.repository)
}

fn worktree_repository(record: &WorktreeRecord) -> Result<Repository> {
    if !record.path.is_dir() {
        return Err(Error::Invalid(format!(
            "the worktree {} is gone (deleted by hand?); `terminal repair ID` makes it again from its \
             branch, `terminal close ID --prune` forgets the session and deletes the branch",
            record.path.display()
        )));
    }
    Repository::open(&record.path)
}

/// What the session changed against its base, committed and not (untracked files too).
pub fn diff(record: &WorktreeRecord, stat: bool) -> Result<String> {
    worktree_repository(record)?.diff_work_tree(&record.base, if stat { &["--stat"] } else { &[] })
}

/// What a paused session's branch holds against its base: its worktree is gone while it is paused,
/// and pausing committed every change on the branch.
pub fn diff_paused(record: &WorktreeRecord, stat: bool) -> Result<String> {
    let main = main_repository(record)?;
    if !has_branch(&main, &record.branch) {
        return Err(Error::Invalid(format!(
            "the branch {} of this paused session is gone, and with it its work; `terminal close ID \
             --prune` forgets the session",
            record.branch
        )));
    }
    let mut args = vec!["diff", record.base.as_str(), record.branch.as_str()];
    if stat {
        args.push("--stat");
    }
    main.run(&args, None)
}

/// A worktree session's branch and how far it is from the main work tree's.
#[derive(Clone, Debug, Serialize)]
pub struct WorktreeStatus {
    /// The branch.
    pub branch: String,
    /// Files that differ from the base, committed or not.
    pub changed_files: usize,
    /// Commits on the branch that the main work tree's branch lacks.
    pub ahead: usize,
    /// Commits on the main work tree's branch that the branch lacks.
    pub behind: usize,
}

/// The status of a worktree session.
pub fn status(record: &WorktreeRecord) -> Result<WorktreeStatus> {
    let changed = worktree_repository(record)?.diff_work_tree(&record.base, &["--name-only"])?;
    let main = main_repository(record)?;
    let counts = main.run(
        &[
            "rev-list",
            "--left-right",
            "--count",
            &format!("HEAD...{}", record.branch),
        ],
        None,
    )?;
    let mut numbers = counts.split_whitespace().map(|n| n.parse().unwrap_or(0));
    let behind = numbers.next().unwrap_or(0);
    let ahead = numbers.next().unwrap_or(0);
    Ok(WorktreeStatus {
        branch: record.branch.clone(),
        changed_files: changed.lines().filter(|line| !line.is_empty()).count(),
        ahead,
        behind,
    })
}

/// Why removing the worktree would lose work (uncommitted changes, or commits the main work tree's
/// branch lacks), or None when nothing would be lost.
pub fn unmerged_work(record: &WorktreeRecord) -> Result<Option<String>> {
    // Uncommitted work exists only while the worktree does (a paused session has none).
    let uncommitted = if record.path.is_dir() {
        Repository::open(&record.path)?
            .diff_work_tree("HEAD", &["--name-only"])?
            .lines()
            .filter(|line| !line.is_empty())
            .count()
    } else {
        0
    };
    let main = main_repository(record)?;
    if !has_branch(&main, &record.branch) {
        return Ok(None);
    }
    let branch = format!("refs/heads/{}", record.branch);
    // Merged (also when squashed) if merging the branch again would change nothing.
    let head_tree = main.run(&["rev-parse", "HEAD^{tree}"], None)?;
    let again = main.try_run(&[
        "merge-tree",
        "--write-tree",
        "--no-messages",
        "HEAD",
        &branch,
    ])?;
    let merged = again.success && again.stdout.lines().next() == Some(head_tree.as_str());
    let unmerged: usize = if merged {
        0
    } else {
        main.run(&["rev-list", "--count", &format!("HEAD..{branch}")], None)?
            .parse()
            .unwrap_or(0)
    };
    Ok((uncommitted > 0 || !merged).then(|| {
        format!(
            "{} has work that is not merged ({uncommitted} uncommitted files, {unmerged} commits not on the main branch); merge it first, or pass --force to throw it away",
            record.branch
        )
    }))
}

/// Removes the worktree (what is in it is lost) and its branch.
pub fn remove(record: &WorktreeRecord) -> Result<()> {
    let main = main_repository(record)?;
    if record.path.is_dir() {
        remove_directory(&main, record)?;
    } else {
        main.run(&["worktree", "prune"], None)?;
    }
    if has_branch(&main, &record.branch) {
        main.run(&["branch", "-D", "--quiet", &record.branch], None)?;
    }
    Ok(())
}

/// A merge of a session's branch.
#[derive(Clone, Debug, Serialize)]
pub struct Merged {
    /// The branch merged.
    pub branch: String,
    /// The branch merged into.
    pub into: String,
    /// The new commit on `into`.
    pub commit: String,
    /// Whether the branch's changes went in as one commit without the branch as a parent.
    pub squash: bool,
    /// Whether uncommitted work in the worktree was committed on the branch first.
    pub committed_work_in_progress: bool,
}

/// Commits whatever the worktree holds that its branch does not (untracked files too) on the branch;
/// returns whether there was anything.
pub fn commit_work_in_progress(record: &WorktreeRecord, message: &str) -> Result<bool> {
    let repository = worktree_repository(record)?;
    let tree = repository.snapshot_tree()?;
    let head = repository.run(&["rev-parse", "HEAD"], None)?;
    if tree == repository.run(&["rev-parse", "HEAD^{tree}"], None)? {
        return Ok(false);
    }
    let commit = repository.commit_tree(&tree, Some(&head), message)?;
    // Move the branch and make the index match, leaving the files as they are.
    repository.run(
        &[
            "update-ref",
            &format!("refs/heads/{}", record.branch),
            &commit,
            &head,
        ],
        None,
    )?;
    repository.run(&["reset", "--quiet", "--mixed", &commit], None)?;
    Ok(true)
}

/// Merges the session's branch (with its uncommitted work committed first) into `into`, by default the
/// main work tree's branch. The merge is computed without touching any work tree; a conflict names
/// the files and changes nothing. When `into` is checked out in the main work tree, that work tree is
/// brought along (`reset --keep`), and refused without a change if local edits are in the way.
pub fn merge(record: &WorktreeRecord, into: Option<&str>, squash: bool) -> Result<Merged> {
    let main = main_repository(record)?;
    let current = main
        .run(&["symbolic-ref", "--quiet", "--short", "HEAD"], None)
        .ok();
    let into = match (into, &current) {
        (Some(into), _) => into.to_string(),
        (None, Some(current)) => current.clone(),
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{} has a detached HEAD; say which branch to merge into with --into",
                record.repository.display()
            )));
        }
    };
    let target = main
        .run(
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{into}"),
            ],
            None,
        )
        .map_err(|_| Error::Invalid(format!("there is no branch `{into}` to merge into")))?;
    let committed_work_in_progress = commit_work_in_progress(
        record,
        &format!(
            "Work in progress of {} (committed for a merge)",
            record.branch
        ),
    )?;
    let branch = main.run(
        &["rev-parse", &format!("refs/heads/{}", record.branch)],
        None,
    )?;
    let attempt = main.try_run(&[
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        &target,
        &branch,
    ])?;
    let mut lines = attempt.stdout.lines();
    let tree = lines.next().unwrap_or_default().to_string();
    if !attempt.success {
        let files: Vec<&str> = lines.filter(|line| !line.is_empty()).collect();
        return Err(Error::Failed(format!(
            "merging {} into {into} conflicts in: {}; nothing was changed. Resolve it in the session's \
             worktree (merge {into} there), then merge again",
            record.branch,
            files.join(", ")
        )));
    }
    let message = if squash {
        format!("Squashed changes of {}", record.branch)
    } else {
        format!("Merge branch '{}' into {into}", record.branch)
    };
    let commit = if squash {
        main.commit_tree(&tree, Some(&target), &message)?
    } else {
        main.run(
            &[
                "commit-tree",
                &tree,
                "-p",
                &target,
                "-p",
                &branch,
                "-m",
                &message,
            ],
            None,
        )?
    };
    if current.as_deref() == Some(into.as_str()) {
        main.run(&["reset", "--quiet", "--keep", &commit], None).map_err(|e| {
            Error::Failed(format!(
                "the main work tree has uncommitted changes in files the merge touches, so nothing was \
                 changed; commit or stash them, then merge again ({e})"
            ))
        })?;
    } else {
        main.run(
            &[
                "update-ref",
                &format!("refs/heads/{into}"),
                &commit,
                &target,
            ],
            None,
        )?;
    }
    Ok(Merged {
        branch: record.branch.clone(),
        into,
        commit,
        squash,
        committed_work_in_progress,
    })
}
