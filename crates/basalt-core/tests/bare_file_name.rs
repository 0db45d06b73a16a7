//! `write_atomically` given a bare file name writes it in the working directory and reports
//! success (it used to sync the directory "" after the rename and fail). A file of its own:
//! the test changes the process's working directory.

#[test]
fn a_bare_file_name_is_written_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::env::set_current_dir(dir.path()).expect("cd");
    basalt_core::fs::write_atomically(std::path::Path::new("plain.bin"), b"bytes")
        .expect("a bare file name is a file in the working directory");
    assert_eq!(
        std::fs::read(dir.path().join("plain.bin")).expect("read"),
        b"bytes"
    );
    assert!(!dir.path().join("plain.tmp").exists());
}
