-- A schema 1 outside journal, written by airgap at commit 5c16a34 (the last to use schema 1)
-- through Journal and process._Run._apply; dumped with sqlite3 iterdump. See
-- journal-v1-response.json for the response items that code made of it.
BEGIN TRANSACTION;
CREATE TABLE items (
            bundle_id TEXT NOT NULL REFERENCES requests (bundle_id),
            item_id TEXT NOT NULL,
            action TEXT NOT NULL,
            device_key TEXT,
            state TEXT NOT NULL CHECK (state IN ('NEW', 'SUBMITTING', 'SUBMITTED', 'DONE', 'FAILED', 'NEEDS_ATTENTION')),
            vendor_ref TEXT,
            result TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (bundle_id, item_id));
INSERT INTO "items" VALUES('req-v1','item-0001','cisco.reserve','C9300-24T:FOC00000001','DONE','{"poll_id":"773126444402795033"}','{"files":{"lic.txt":"PHNtYXJ0TGljZW5zZT5GT0MxPC9zbWFydExpY2Vuc2U+Cg=="},"result":{"auth_status":"AUTHORIZED","correlation_id":"c-1"},"vendor_refs":{"correlation_id":"c-1","poll_id":"773126444402795033"}}',NULL,1,'2026-03-01T12:00:00.000Z');
INSERT INTO "items" VALUES('req-v1','item-0002','cisco.reserve','C9300-24T:FOC00000002','DONE',NULL,'{"files":{"lic.txt":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==","result.json":"e30K"},"result":{"n":2,"nested":{"b":[1,null]},"status_message":"found by device look-up"},"vendor_refs":{}}',NULL,1,'2026-03-01T12:00:00.000Z');
INSERT INTO "items" VALUES('req-v1','item-0003','cisco.reserve','C9300-24T:FOC00000003','FAILED',NULL,NULL,'{"code":"E_VENDOR","message":"Device already reserved elsewhere","result":{"correlation_id":"c-3","status":"FAILED"}}',1,'2026-03-01T12:00:00.000Z');
INSERT INTO "items" VALUES('req-v1','item-0004','cisco.reserve','C9300-24T:FOC00000004','FAILED',NULL,NULL,'{"code":"E_VENDOR","message":"unknown virtual account"}',1,'2026-03-01T12:00:00.000Z');
INSERT INTO "items" VALUES('req-v1','item-0005','cisco.return','C9300-24T:FOC00000005','NEEDS_ATTENTION',NULL,NULL,'{"code":"NEEDS_ATTENTION","message":"whether the return went through cannot be told; re-run with --resubmit item-0005"}',1,'2026-03-01T12:00:00.000Z');
INSERT INTO "items" VALUES('req-v1','item-0006','cisco.reserve','C9300-24T:FOC00000006','SUBMITTED','{"poll_id":"99"}',NULL,NULL,1,'2026-03-01T12:00:00.000Z');
INSERT INTO "items" VALUES('req-v1','item-0007','cisco.reserve','C9300-24T:FOC00000007','NEW',NULL,NULL,NULL,0,'2026-03-01T12:00:00.000Z');
INSERT INTO "items" VALUES('req-v1','item-0008','cisco.slr_reserve','C9300-24T:FOC00000008','FAILED',NULL,NULL,'{"code":"E_VENDOR","message":"SLR code rejected"}',1,'2026-03-01T12:00:00.000Z');
CREATE TABLE leases (
            bundle_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            proc_start TEXT,
            started_at TEXT NOT NULL,
            token TEXT NOT NULL);
CREATE TABLE requests (
            bundle_id TEXT PRIMARY KEY,
            producer_fingerprint TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            manifest_sha256 TEXT NOT NULL,
            kind TEXT NOT NULL,
            received_at TEXT NOT NULL,
            expires TEXT,
            status TEXT NOT NULL DEFAULT 'open');
INSERT INTO "requests" VALUES('req-v1','sha256:abababababababababababababababababababababababababababababababab',7,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','request','2026-03-01T12:00:00.000Z','2026-03-08T12:00:00Z','open');
CREATE TABLE responses (
            bundle_id TEXT PRIMARY KEY,
            request_bundle_id TEXT NOT NULL REFERENCES requests (bundle_id),
            manifest_sha256 TEXT NOT NULL,
            created TEXT NOT NULL,
            path TEXT,
            items_digest TEXT NOT NULL);
CREATE INDEX requests_by_producer ON requests (producer_fingerprint, kind, sequence);
CREATE INDEX items_by_state ON items (state);
CREATE INDEX responses_by_request ON responses (request_bundle_id, created);
COMMIT;
PRAGMA user_version = 1;
