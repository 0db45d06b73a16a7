//! The object store against a real S3 server (SeaweedFS with signature checks).

use basalt_objects::testing::{ACCESS_KEY_ID, TempS3};
use basalt_objects::{Objects, ObjectsError};

#[test]
fn stores_lists_and_removes_objects_below_its_prefix() {
    let s3 = TempS3::start().expect("SeaweedFS starts");
    let objects = s3.objects("s3://basalt-docs/team/").expect("opens");
    let other = s3.objects("s3://basalt-docs/other").expect("opens");
    other.put("a.md", b"not ours".to_vec()).expect("stores");

    assert_eq!(objects.get("handbook/leave.md").expect("reads"), None);
    objects
        .put("handbook/leave.md", b"Six weeks of sabbatical.".to_vec())
        .expect("stores");
    objects
        .put("handbook/pay.md", b"Paid monthly.".to_vec())
        .expect("stores");
    objects
        .put("notes.txt", vec![0, 159, 255])
        .expect("stores binary bytes");
    assert_eq!(
        objects.get("handbook/leave.md").expect("reads").as_deref(),
        Some(&b"Six weeks of sabbatical."[..])
    );
    assert_eq!(
        objects.get("notes.txt").expect("reads"),
        Some(vec![0, 159, 255])
    );

    let all = objects.list("").expect("lists");
    let keys: Vec<&str> = all.iter().map(|object| object.key.as_str()).collect();
    assert_eq!(keys, ["handbook/leave.md", "handbook/pay.md", "notes.txt"]);
    assert_eq!(all[0].size, 24);
    let under: Vec<String> = objects
        .list("handbook/")
        .expect("lists")
        .into_iter()
        .map(|object| object.key)
        .collect();
    assert_eq!(under, ["handbook/leave.md", "handbook/pay.md"]);

    // Changed content changes the entity tag; the same content keeps it.
    let etag = |objects: &Objects| objects.list("handbook").expect("lists")[0].etag.clone();
    let before = etag(&objects);
    assert!(before.is_some(), "the store gives entity tags");
    objects
        .put("handbook/leave.md", b"Six weeks of sabbatical.".to_vec())
        .expect("stores");
    assert_eq!(etag(&objects), before);
    objects
        .put("handbook/leave.md", b"Eight weeks of sabbatical.".to_vec())
        .expect("replaces");
    assert_ne!(etag(&objects), before);

    objects.delete("handbook/leave.md").expect("deletes");
    objects
        .delete("handbook/leave.md")
        .expect("deleting twice is no error");
    assert_eq!(objects.get("handbook/leave.md").expect("reads"), None);
    assert_eq!(objects.list("").expect("lists").len(), 2);
    assert_eq!(
        other.list("").expect("lists").len(),
        1,
        "the other prefix is untouched"
    );
    for index in 0..30 {
        objects
            .put(&format!("batch/{index:02}.txt"), vec![b'x'; index])
            .expect("stores");
    }
    assert_eq!(objects.delete_under("batch").expect("deletes"), 30);
    assert_eq!(objects.list("batch").expect("lists"), []);
    assert_eq!(
        objects.list("").expect("lists").len(),
        2,
        "only the batch went"
    );
    assert!(
        objects.delete_under("").is_err(),
        "never everything at once"
    );
    objects.check().expect("the store is reachable");

    // The store keeps what it is given as it is (no compression that would hide words from a
    // grep of its files): a test that greps them for a sealed document's words can fail.
    let text = format!(
        "# Abstract\n\nFile zqgrepcheck.\n\n{}",
        "Cells were cultured for two weeks before the assay. ".repeat(40)
    );
    objects
        .put("uploads/job-x/0000.md", text.into_bytes())
        .expect("stores");
    let found = basalt_objects::testing::files_containing(&s3.data_dir(), b"zqgrepcheck");
    assert!(
        !found.is_empty(),
        "a clear word is found in the store's files"
    );
}

#[test]
fn wrong_credentials_and_a_missing_store_are_clear_errors() {
    let s3 = TempS3::start().expect("SeaweedFS starts");
    let wrong = Objects::open_with(
        "s3://basalt-docs",
        &[
            ("aws_endpoint_url", s3.endpoint()),
            ("aws_access_key_id", ACCESS_KEY_ID),
            ("aws_secret_access_key", "not-the-secret"),
        ],
    )
    .expect("opens");
    let error = wrong.put("a.md", b"x".to_vec()).expect_err("refused");
    assert!(matches!(error, ObjectsError::Denied(_)), "{error:?}");
    assert!(
        error.to_string().contains("AWS_SECRET_ACCESS_KEY"),
        "{error}"
    );
    assert!(!error.to_string().contains("not-the-secret"), "{error}");

    drop(s3);
    let gone = Objects::open_with(
        "s3://basalt-docs",
        &[
            ("aws_endpoint_url", "http://127.0.0.1:9"),
            ("aws_access_key_id", ACCESS_KEY_ID),
            ("aws_secret_access_key", "x"),
        ],
    )
    .expect("opens");
    let error = gone.check().expect_err("unreachable");
    assert!(matches!(error, ObjectsError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("AWS_ENDPOINT_URL"), "{error}");
    assert!(
        matches!(
            Objects::open("https://bucket"),
            Err(ObjectsError::Config(_))
        ),
        "not an s3:// address"
    );
}

#[test]
fn calls_from_inside_an_async_runtime_do_not_block_it() {
    let s3 = TempS3::start().expect("SeaweedFS starts");
    let objects = s3.objects("s3://basalt-docs/async").expect("opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        objects.put("a.txt", b"inside".to_vec()).expect("stores");
        assert_eq!(
            objects.get("a.txt").expect("reads").as_deref(),
            Some(&b"inside"[..])
        );
    });
    // Dropped inside a runtime, as a server's state is.
    runtime.block_on(async move { drop(objects) });
}
