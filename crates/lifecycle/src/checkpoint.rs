//! Checkpoints: snapshots of a whole work tree (what `.gitignore` does not exclude) as commits on hidden
//! refs, `refs/mahavishnu/checkpoints/...`, made through a private index. HEAD, the branch and the
//! user's index never move, except when the user asks for an ordinary commit as well.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use mahavishnu_core::{Error, Result, Timestamp};
use serde::Serialize;

const REF_PREFIX: &str = "refs/mahavishnu/checkpoints/";

/// One checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checkpoint {
    /// Short id (the commit's abbreviated hash), used by `diff` and `restore`.
    pub id: String,
    /// The full commit hash.
    pub commit: String,
    /// The hidden ref that keeps it.
    #[serde(rename = "ref")]
    pub reference: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// Its message.
    pub message: String,
    /// The ordinary commit made on the branch as well, when asked for and there was something to commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_commit: Option<String>,
}

/// What a git command that may fail printed.
pub struct Attempt {
    /// Whether it exited 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
}

/// A git work tree.
#[derive(Clone, Debug)]
pub struct Repository {
    top: PathBuf,
    git_dir: PathBuf,
    /// No identity is configured, so commits are made as "Mahavishnu"; asked of git on the first
    /// command that makes a commit.
    anonymous: OnceLock<bool>,
}

impl Repository {
    /// The work tree around `dir`; a directory outside any gets a clear error.
    pub fn discover(dir: &Path) -> Result<Self> {
        let output = git(
            dir,
            &["rev-parse", "--show-toplevel", "--absolute-git-dir"],
            None,
            false,
        )?;
        if !output.status.success() {
            return Err(Error::Invalid(format!(
                "{} is not inside a git work tree; checkpoints need git: run `git init` there first",
                dir.display()
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let (Some(top), Some(git_dir)) = (lines.next(), lines.next()) else {
            return Err(Error::Invalid(format!(
                "{} is a bare git repository; checkpoints need a work tree",
                dir.display()
            )));
        };
        Ok(Repository {
            top: PathBuf::from(top),
            git_dir: PathBuf::from(git_dir),
            anonymous: OnceLock::new(),
        })
    }

    /// The work tree whose top is `top`, found without running git: its `.git` is the git directory or,
    /// in a linked worktree, a file naming it.
    pub fn open(top: &Path) -> Result<Self> {
        let dot_git = top.join(".git");
        let git_dir = if dot_git.is_dir() {
            dot_git
        } else {
            let link = std::fs::read_to_string(&dot_git).map_err(|e| {
                Error::io(
                    format!("{} is not the top of a git work tree", top.display()),
                    e,
                )
            })?;
            let named = link.strip_prefix("gitdir:").map(str::trim).ok_or_else(|| {
                Error::Invalid(format!(
                    "{} names no git directory; repair it with `git worktree repair`",
                    dot_git.display()
                ))
            })?;
            top.join(named)
        };
        Ok(Repository {
            top: top.to_path_buf(),
            git_dir,
            anonymous: OnceLock::new(),
        })
    }

    /// Whether commits must be made as "Mahavishnu": checkpoints work where no identity is configured,
    /// and git's own settings win where there is one.
    fn anonymous(&self, args: &[&str]) -> bool {
        let commits = matches!(args.first(), Some(&("commit-tree" | "commit" | "merge")));
        commits
            && *self.anonymous.get_or_init(|| {
                git(&self.top, &["var", "GIT_COMMITTER_IDENT"], None, false)
                    .is_ok_and(|output| !output.status.success())
            })
    }

    /// The top of the work tree.
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// Runs git in the work tree (with a private index, when given) and returns its output.
    pub fn run(&self, args: &[&str], index: Option<&Path>) -> Result<String> {
        let output = git(&self.top, args, index, self.anonymous(args))?;
        self.answer(args, output)
    }

    /// Runs git with `input` on its standard input.
    fn run_with_input(&self, args: &[&str], index: Option<&Path>, input: &[u8]) -> Result<String> {
        let mut child = command(&self.top, args, index, self.anonymous(args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(cannot_run)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| Error::io("cannot write to git", e))?;
        }
        let output = child.wait_with_output().map_err(cannot_run)?;
        self.answer(args, output)
    }

    fn answer(&self, args: &[&str], output: Output) -> Result<String> {
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_string());
        }
        Err(Error::Invalid(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            self.top.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }

    /// Runs git and returns whether it succeeded and what it printed, for commands whose failure is an
    /// answer (a merge that conflicts).
    pub fn try_run(&self, args: &[&str]) -> Result<Attempt> {
        let output = git(&self.top, args, None, self.anonymous(args))?;
        Ok(Attempt {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }

    fn head(&self) -> Option<String> {
        self.run(&["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], None)
            .ok()
            .filter(|head| !head.is_empty())
    }

    /// Snapshots the work tree into a tree object through a private index seeded from the stat cache,
    /// so that only changed files are hashed again.
    pub fn snapshot_tree(&self) -> Result<String> {
        let cache = self.stat_cache()?;
        let index = PrivateIndex::new(&self.git_dir)?;
        copy_index(&cache, &index.path)?;
        self.run(&["add", "--all", "--", "."], Some(&index.path))?;
        self.run(&["write-tree"], Some(&index.path))
    }

    /// The work tree's stat cache: a private index of it, kept in the git directory, that tells git
    /// which files are unchanged without reading them. The user's own index can stay "racily clean":
    /// git compares every file written in the same second as the index byte by byte, on every use, until
    /// the index is written again (a fresh worktree is all such files). It is never written or locked
    /// here, so that git commands of the user or an agent never find it busy; instead the cache is
    /// seeded from it and refreshed, again whenever the user's index changed or the cache was written
    /// in the same second as the user's index.
    fn stat_cache(&self) -> Result<PathBuf> {
        let cache = self.git_dir.join("mahavishnu").join("stat-index");
        let user = self.git_dir.join("index");
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let seconds = |time: std::time::SystemTime| {
            time.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
        };
        let stale = match (modified(&user), modified(&cache)) {
            (_, None) => true,
            (Some(user), Some(cache)) => user > cache || seconds(cache) <= seconds(user),
            (None, Some(_)) => false,
        };
        if stale {
            let fresh = PrivateIndex::new(&self.git_dir)?;
            copy_index(&user, &fresh.path)?;
            // Best effort: without it the cache is only as fast as the user's index. Written even
            // when nothing changed (git writes only then), so that its own time settles it; on the
            // way, git marks any entry that only looked clean by its time as changed.
            let _ = git(
                &self.top,
                &["update-index", "-q", "--refresh", "--force-write-index"],
                Some(&fresh.path),
                false,
            );
            if fresh.path.is_file() {
                std::fs::rename(&fresh.path, &cache)
                    .map_err(|e| Error::io(format!("cannot write {}", cache.display()), e))?;
            }
        }
        Ok(cache)
    }

    /// `git diff OPTIONS AGAINST` of the whole work tree, untracked files included (those `.gitignore`
    /// does not exclude), through the stat cache.
    pub fn diff_work_tree(&self, against: &str, options: &[&str]) -> Result<String> {
        let cache = self.stat_cache()?;
        let mut args = vec!["diff", "--no-color", "--no-ext-diff"];
        args.extend(options);
        args.push(against);
        let listing = [
            "ls-files",
            "-z",
            "--others",
            "--exclude-standard",
            "--directory",
            "--no-empty-directory",
        ];
        // Finding untracked files and diffing tracked ones each walk the work tree: both at once.
        let (untracked, tracked) = std::thread::scope(|scope| {
            let untracked = scope.spawn(|| self.run(&listing, Some(&cache)));
            let tracked = self.run(&args, Some(&cache));
            (untracked.join(), tracked)
        });
        let untracked = untracked
            .map_err(|_| Error::Failed("listing untracked files failed unexpectedly".into()))??;
        if untracked.is_empty() {
            return tracked;
        }
        // Untracked files join the cache as intent-to-add entries, so that the next diff finds them
        // there (one that is deleted again shows no more); while another diff holds the cache, they
        // join a throwaway copy of it instead.
        let add = [
            "--literal-pathspecs",
            "add",
            "--intent-to-add",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
        ];
        if self
            .run_with_input(&add, Some(&cache), untracked.as_bytes())
            .is_ok()
        {
            return self.run(&args, Some(&cache));
        }
        let index = PrivateIndex::new(&self.git_dir)?;
        copy_index(&cache, &index.path)?;
        self.run_with_input(&add, Some(&index.path), untracked.as_bytes())?;
        self.run(&args, Some(&index.path))
    }

    /// Makes a commit of `tree` (on `parent`), as the user, or as Mahavishnu where git knows no one.
    pub fn commit_tree(&self, tree: &str, parent: Option<&str>, message: &str) -> Result<String> {
        let mut args = vec!["commit-tree", tree, "-m", message];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        self.run(&args, None)
    }

    /// Takes a checkpoint; with `commit`, also commits the changes on the current branch (never on a
    /// detached HEAD, never an empty commit).
    pub fn checkpoint(&self, message: &str, commit: bool) -> Result<Checkpoint> {
        let tree = self.snapshot_tree()?;
        let head = self.head();
        let snapshot = self.commit_tree(&tree, head.as_deref(), message)?;
        let created_at = Timestamp::now();
        let short = &snapshot[..12.min(snapshot.len())];
        let reference = format!("{REF_PREFIX}{}-{short}", created_at.0);
        self.run(&["update-ref", &reference, &snapshot], None)?;
        let branch_commit = if commit {
            self.commit_on_branch(&tree, head.as_deref(), message)?
        } else {
            None
        };
        Ok(Checkpoint {
            id: short.to_string(),
            commit: snapshot.clone(),
            reference,
            created_at,
            message: message.to_string(),
            branch_commit,
        })
    }

    fn commit_on_branch(
        &self,
        tree: &str,
        head: Option<&str>,
        message: &str,
    ) -> Result<Option<String>> {
        let branch = self.run(&["symbolic-ref", "--quiet", "HEAD"], None).map_err(|_| {
            Error::Invalid("HEAD is detached: the checkpoint was taken, but no commit is made on a detached HEAD; check out a branch".into())
        })?;
        if let Some(head) = head
            && self.run(&["rev-parse", &format!("{head}^{{tree}}")], None)? == tree
        {
            return Ok(None); // nothing changed: no empty commit
        }
        let commit = self.commit_tree(tree, head, message)?;
        let old = head.unwrap_or("0000000000000000000000000000000000000000");
        self.run(
            &[
                "update-ref",
                "-m",
                "mahavishnu checkpoint --commit",
                &branch,
                &commit,
                old,
            ],
            None,
        )?;
        // The user's index follows the new commit, as after `git commit -a`; the work tree is untouched.
        self.run(&["reset", "--quiet", "--mixed"], None)?;
        Ok(Some(commit))
    }

    /// Every checkpoint, newest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let format = "%(refname)%09%(objectname)%09%(contents:subject)";
        let out = self.run(
            &[
                "for-each-ref",
                "--sort=-refname",
                &format!("--format={format}"),
                REF_PREFIX,
            ],
            None,
        )?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, '\t');
                let reference = fields.next()?.to_string();
                let commit = fields.next()?.to_string();
                let message = fields.next().unwrap_or_default().to_string();
                let stamp = reference
                    .strip_prefix(REF_PREFIX)?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some(Checkpoint {
                    id: commit[..12.min(commit.len())].to_string(),
                    commit,
                    reference,
                    created_at: Timestamp(stamp),
                    message,
                    branch_commit: None,
                })
            })
            .collect())
    }

    /// The checkpoint an id (or any unique prefix of its hash) names.
    pub fn find(&self, id: &str) -> Result<Checkpoint> {
        let matches: Vec<Checkpoint> = self
            .checkpoints()?
            .into_iter()
            .filter(|checkpoint| {
                !id.is_empty()
                    && (checkpoint.commit.starts_with(id) || checkpoint.reference.ends_with(id))
            })
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().unwrap_or_else(|| unreachable!())),
            0 => Err(Error::Invalid(format!(
                "no checkpoint `{id}`; see `mahavishnu checkpoint list`"
            ))),
            _ => Err(Error::Invalid(format!(
                "`{id}` names several checkpoints; give more of the id"
            ))),
        }
    }

    /// What changed in the work tree since a checkpoint (a unified diff, or `--stat`).
    pub fn diff(&self, id: &str, stat: bool) -> Result<String> {
        let checkpoint = self.find(id)?;
        self.diff_work_tree(&checkpoint.commit, if stat { &["--stat"] } else { &[] })
    }

    /// Writes a checkpoint's files back into the work tree, after a safety checkpoint of the current
    /// state; files added since the checkpoint are removed. HEAD, branch and index stay as they are.
    pub fn restore(&self, id: &str) -> Result<(Checkpoint, Checkpoint)> {
        let checkpoint = self.find(id)?;
        let safety = self.checkpoint(
            &format!("safety checkpoint before restoring {}", checkpoint.id),
            false,
        )?;
        let added = self.run(
            &[
                "diff",
                "--name-only",
                "-z",
                "--no-renames",
                "--diff-filter=A",
                &checkpoint.commit,
                &safety.commit,
            ],
            None,
        )?;
        for path in added.split('\0').filter(|path| !path.is_empty()) {
            let _ = std::fs::remove_file(self.top.join(path));
        }
        let index = PrivateIndex::new(&self.git_dir)?;
        self.run(&["read-tree", &checkpoint.commit], Some(&index.path))?;
        self.run(&["checkout-index", "--all", "--force"], Some(&index.path))?;
        Ok((checkpoint, safety))
    }
}

/// A temporary index file inside the git directory, removed when dropped.
struct PrivateIndex {
    path: PathBuf,
}

impl PrivateIndex {
    fn new(git_dir: &Path) -> Result<Self> {
        let dir = git_dir.join("mahavishnu");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(format!(
            "index-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        Ok(PrivateIndex { path })
    }
}

impl Drop for PrivateIndex {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies an index file with its modification time, so that git's check for entries written in the
/// same second as the index ("racily clean") finds in the copy what it would find in the original. A
/// missing index is an empty one, to git as here: nothing to copy.
fn copy_index(from: &Path, to: &Path) -> Result<()> {
    if !from.is_file() {
        return Ok(());
    }
    let failed = |e| Error::io(format!("cannot copy {}", from.display()), e);
    std::fs::copy(from, to).map_err(failed)?;
    let modified = std::fs::metadata(from)
        .and_then(|m| m.modified())
        .map_err(failed)?;
    std::fs::File::options()
        .write(true)
        .open(to)
        .and_then(|copy| copy.set_modified(modified))
        .map_err(failed)
}

fn git(dir: &Path, args: &[&str], index: Option<&Path>, anonymous: bool) -> Result<Output> {
    command(dir, args, index, anonymous)
        .stdin(Stdio::null())
        .output()
        .map_err(cannot_run)
}

fn cannot_run(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::Invalid(
            "git is not installed (not found on PATH); checkpoints need it: install git".into(),
        ),
        _ => Error::io("cannot run git", e),
    }
}

fn command(dir: &Path, args: &[&str], index: Option<&Path>, anonymous: bool) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0");
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    if anonymous {
        for role in ["AUTHOR", "COMMITTER"] {
            command.env(format!("GIT_{role}_NAME"), "Mahavishnu");
            command.env(format!("GIT_{role}_EMAIL"), "mahavishnu@localhost");
        }
    }
    command
}
