//! The job queue with its uploads in an S3 store (`--objects`) against the suites every queue
//! and every shared-upload queue pass, on a throwaway SeaweedFS: each handle with a data
//! directory and a spool of its own, as replicas are.

use std::sync::Arc;

use basalt_kb::{DataDir, FileJobQueue, JobQueue, ObjectUploads};
use basalt_objects::testing::TempS3;

#[test]
fn a_queue_with_its_uploads_in_s3_passes_the_queue_suites() {
    let s3 = TempS3::start().expect("SeaweedFS starts");
    let objects = Arc::new(s3.objects("s3://basalt-queue/replicas").expect("the store"));
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || -> Box<dyn JobQueue> {
        let queue = FileJobQueue::open(&DataDir::new(dir.path())).expect("opens");
        Box::new(ObjectUploads::new(Arc::new(queue), objects.clone()))
    };
    basalt_kb::job_queue_conformance(&open);
    // Two handles on the same store, each with a data directory of its own.
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let handle = |dir: &tempfile::TempDir| {
        let queue = FileJobQueue::open(&DataDir::new(dir.path())).expect("opens");
        ObjectUploads::new(Arc::new(queue), objects.clone())
    };
    basalt_kb::jobs::shared_upload_conformance(&handle(&a), &handle(&b));
    assert_eq!(
        objects.list("uploads").expect("lists"),
        [],
        "dropped from the store"
    );
}
