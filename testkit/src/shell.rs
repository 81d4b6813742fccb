//! Shell command lines as shown in the manual and in CI files, split into commands and words
//! the way a shell does, for tests that run or parse each command.

/// One command of a shell text: its words, and whether its input is the output of the command
/// before it (`… | jq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    pub words: Vec<String>,
    pub piped: bool,
}

/// The commands of a shell text: quotes, backslash-newline, `#` comments; commands end at a
/// newline, `;`, `&&`, `||`, `>` (what follows is the file redirected to) and `|` (the next one
/// then reads a pipe).
pub fn commands(script: &str) -> Vec<ShellCommand> {
    let script = script.replace("\\\n", " ");
    let mut cmds = vec![ShellCommand {
        words: Vec::new(),
        piped: false,
    }];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = script.chars().peekable();
    fn flush(word: &mut String, in_word: &mut bool, cmds: &mut [ShellCommand]) {
        if *in_word {
            if let Some(c) = cmds.last_mut() {
                c.words.push(std::mem::take(word));
            }
            *in_word = false;
        }
    }
    let next = |cmds: &mut Vec<ShellCommand>, piped: bool| {
        cmds.push(ShellCommand {
            words: Vec::new(),
            piped,
        })
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                flush(&mut word, &mut in_word, &mut cmds);
                next(&mut cmds, false);
            }
            '|' if chars.peek() != Some(&'|') => {
                flush(&mut word, &mut in_word, &mut cmds);
                next(&mut cmds, true);
            }
            '\n' | ';' | '|' | '&' | '>' => {
                flush(&mut word, &mut in_word, &mut cmds);
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                next(&mut cmds, false);
            }
            c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut cmds),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    flush(&mut word, &mut in_word, &mut cmds);
    cmds.into_iter().filter(|c| !c.words.is_empty()).collect()
}
