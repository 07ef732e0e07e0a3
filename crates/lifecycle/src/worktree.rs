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
    if repository
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
    {
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
    /// Creates the branch and the worktree, and copies `copy` (paths relative to the main work tree)
    /// into it; missing files are skipped. Returns the record and the files copied.
    pub fn create(self, copy: &[String], port_base: u16) -> Result<(WorktreeRecord, Vec<String>)> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        }
        let path = self.path.to_string_lossy().into_owned();
        self.repository.run(
            &[
                "worktree",
                "add",
                "--quiet",
                "-b",
                &self.branch,
                &path,
                &self.base,
            ],
            None,
        )?;
        let mut copied = Vec::new();
        for relative in copy {
            let relative_path = Path::new(relative);
            if relative_path.is_absolute()
                || relative_path.components().any(|c| c.as_os_str() == "..")
            {
                return Err(Error::Invalid(format!(
                    "worktree.copy entry `{relative}` must be a path inside the work tree"
                )));
            }
            let from = self.repository.top().join(relative_path);
            if !from.is_file() {
                continue;
            }
            let to = self.path.join(relative_path);
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

fn worktree_repository(record: &WorktreeRecord) -> Result<Repository> {
    if !record.path.is_dir() {
        return Err(Error::Invalid(format!(
            "the worktree {} is gone (deleted by hand?); `terminal close ID --prune` removes the record and the branch",
            record.path.display()
        )));
    }
    Repository::discover(&record.path)
}

/// What the session changed against its base, committed and not (untracked files too).
pub fn diff(record: &WorktreeRecord, stat: bool) -> Result<String> {
    let repository = worktree_repository(record)?;
    let tree = repository.snapshot_tree()?;
    let mut args = vec!["diff", "--no-color"];
    if stat {
        args.push("--stat");
    }
    args.extend([record.base.as_str(), tree.as_str()]);
    repository.run(&args, None)
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
    let repository = worktree_repository(record)?;
    let tree = repository.snapshot_tree()?;
    let changed = repository.run(&["diff", "--name-only", &record.base, &tree], None)?;
    let main = Repository::discover(&record.repository)?;
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
    if !record.path.is_dir() {
        return Ok(None);
    }
    let repository = Repository::discover(&record.path)?;
    let tree = repository.snapshot_tree()?;
    let head = repository.run(&["rev-parse", "HEAD^{tree}"], None)?;
    let uncommitted = repository
        .run(&["diff", "--name-only", &head, &tree], None)?
        .lines()
        .filter(|line| !line.is_empty())
        .count();
    let main = Repository::discover(&record.repository)?;
    let unmerged: usize = main
        .run(
            &["rev-list", "--count", &format!("HEAD..{}", record.branch)],
            None,
        )?
        .parse()
        .unwrap_or(0);
    Ok((uncommitted > 0 || unmerged > 0).then(|| {
        format!(
            "{} has work that is not merged ({uncommitted} uncommitted files, {unmerged} commits not on the main branch); merge it first, or pass --force to throw it away",
            record.branch
        )
    }))
}

/// Removes the worktree (what is in it is lost) and its branch.
pub fn remove(record: &WorktreeRecord) -> Result<()> {
    let main = Repository::discover(&record.repository)?;
    if record.path.is_dir() {
        main.run(
            &[
                "worktree",
                "remove",
                "--force",
                &record.path.to_string_lossy(),
            ],
            None,
        )?;
    } else {
        main.run(&["worktree", "prune"], None)?;
    }
    if main
        .run(
            &[
                "show-ref",
                "--verify",
                "--quiet",
                &format!("refs/heads/{}", record.branch),
            ],
            None,
        )
        .is_ok()
    {
        main.run(&["branch", "-D", "--quiet", &record.branch], None)?;
    }
    Ok(())
}
