use super::*;
use std::sync::{Arc, Mutex};

/// One screen: what stdout and stderr write, in the order written.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Stdout and stderr on one terminal: output lines never share a screen line with the
/// progress line — it is erased before each chunk, drawn again after it, and erased when
/// the writer ends.
#[tokio::test]
async fn output_lines_and_the_progress_line_take_turns_on_one_terminal() {
    let screen = Screen::default();
    let mut out = OutputWriter::spawn(screen.clone(), Some(Box::new(screen.clone())), 8).unwrap();
    let mut line = out
        .status_line()
        .expect("this writer draws the progress line");
    line.draw("42% read");
    out.write(b"a\nb\n".to_vec()).await.unwrap();
    line.draw("43% read");
    out.write(b"c\n".to_vec()).await.unwrap();
    out.finish().await.unwrap();
    // After the end, drawing is a no-op (the writer is gone).
    line.draw("too late");
    drop(line);
    assert_eq!(
        screen.text(),
        "\r42% read\x1b[K\r\x1b[Ka\nb\n\r42% read\x1b[K\
         \r43% read\x1b[K\r\x1b[Kc\n\r43% read\x1b[K\r\x1b[K"
    );
}

/// A writer without a progress line writes the output and nothing else, and hands out no
/// handle to draw one.
#[tokio::test]
async fn a_writer_without_a_terminal_writes_output_only() {
    let screen = Screen::default();
    let mut out = OutputWriter::spawn(screen.clone(), None, 1).unwrap();
    assert!(out.status_line().is_none());
    out.write(b"x\n".to_vec()).await.unwrap();
    out.finish().await.unwrap();
    assert_eq!(screen.text(), "x\n");
}

/// A progress line abandoned mid-follow (the follow future dropped, as on Ctrl-C in `run`)
/// is still erased: the writer thread erases it as it ends.
#[tokio::test]
async fn a_dropped_writer_erases_the_progress_line() {
    let screen = Screen::default();
    let out = OutputWriter::spawn(screen.clone(), Some(Box::new(screen.clone())), 2).unwrap();
    let mut line = out.status_line().unwrap();
    line.draw("busy");
    let done = {
        let OutputWriter { tx, done, .. } = out;
        drop(tx);
        done
    };
    done.expect("not taken yet").await.unwrap().unwrap();
    assert_eq!(screen.text(), "\rbusy\x1b[K\r\x1b[K");
}

/// A reader gone (`run | head`): the write that finds the thread failed says why, and
/// finishing after it is an error too, not a panic (it waited on the thread's result twice).
#[tokio::test]
async fn finishing_after_a_failed_write_is_an_error_not_a_panic() {
    struct Gone;
    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = OutputWriter::spawn(Gone, None, 1).unwrap();
    let mut failed = None;
    for _ in 0..100 {
        if let Err(e) = out.write(b"x\n".to_vec()).await {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("a write to a gone reader fails");
    assert!(
        format!("{failed:#}").to_lowercase().contains("broken pipe"),
        "{failed:#}"
    );
    assert!(out.finish().await.is_err());
}
