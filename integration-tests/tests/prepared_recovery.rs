//! A statement Causeway prepared on a server connection disappears behind its back
//! (`DEALLOCATE ALL` run inside a function or DO block, which Causeway cannot see): the
//! server answers 26000 once, Causeway forgets what it recorded for that connection, and
//! the client's next execution prepares the statement again and succeeds.

use crate::support::{sqlstate, Proxy};

#[tokio::test]
async fn statements_lost_behind_causeways_back_are_prepared_again() {
    // One server connection, so the DEALLOCATE hits the connection the statements are on.
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let client = proxy.client().await;
    let add = client.prepare("SELECT $1::int + 1").await.unwrap();
    let mul = client.prepare("SELECT $1::int * 10").await.unwrap();
    assert_eq!(
        client
            .query_one(&add, &[&1])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    assert_eq!(
        client
            .query_one(&mul, &[&2])
            .await
            .unwrap()
            .get::<_, i32>(0),
        20
    );

    client
        .batch_execute("DO $$BEGIN EXECUTE 'DEALLOCATE ALL'; END$$")
        .await
        .unwrap();

    // The first use after the loss reports it (the request had already been sent on the
    // server's word that the statement existed) ...
    let err = client.query_one(&add, &[&3]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"), "{err}");
    // ... and from then on every statement works again, on the same server connection,
    // including those not used since (prepared again, closed first in case they survived).
    for round in 0..3 {
        let sum: i32 = client.query_one(&add, &[&round]).await.unwrap().get(0);
        assert_eq!(sum, round + 1);
        let product: i32 = client.query_one(&mul, &[&round]).await.unwrap().get(0);
        assert_eq!(product, round * 10);
    }
    // Only one statement lost (its server name looked up and deallocated from inside a DO
    // block): the other one survives on the server while Causeway forgets both, and is
    // closed before it is prepared again, so no "already exists" error follows.
    client
        .batch_execute(
            "DO $$DECLARE n text; BEGIN \
             SELECT name INTO n FROM pg_prepared_statements WHERE statement LIKE '%* 10'; \
             EXECUTE format('DEALLOCATE %I', n); END$$",
        )
        .await
        .unwrap();
    let err = client.query_one(&mul, &[&1]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"), "{err}");
    assert_eq!(
        client
            .query_one(&add, &[&5])
            .await
            .unwrap()
            .get::<_, i32>(0),
        6
    );
    assert_eq!(
        client
            .query_one(&mul, &[&5])
            .await
            .unwrap()
            .get::<_, i32>(0),
        50
    );
}
