//! Small typed helpers around one SDK call. Each waits for the operation's rate limit (see
//! `ratelimit`), then sends the call and turns an error into a [`StepError`] naming the
//! resource and the call. They return a `Result` and leave `.await` and `?` to the caller.

use std::future::Future;

use aws_smithy_async::future::pagination_stream::PaginationStream;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::engine::StepError;

/// Which call on which resource: what an error names.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub call: &'static str,
}

/// The call `call` on the resource `kind` `name`.
pub fn op<'a>(kind: &'a str, name: &'a str, call: &'static str) -> Op<'a> {
    Op { kind, name, call }
}

impl Op<'_> {
    fn failed<E>(&self, e: SdkError<E, Response>) -> StepError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        crate::aws::failed(self.kind, self.name, self.call, e)
    }
}

/// Sends a call: its output, or the error.
pub async fn send<T, E>(
    op: Op<'_>,
    call: impl Future<Output = Result<T, SdkError<E, Response>>>,
) -> Result<T, StepError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    crate::ratelimit::acquire(op.call).await;
    call.await.map_err(|e| op.failed(e))
}

/// Sends a call that may find nothing: `None` when AWS answers with the typed not-found error
/// `not_found` recognises (the generated `is_*_exception` method).
pub async fn find<T, E>(
    op: Op<'_>,
    call: impl Future<Output = Result<T, SdkError<E, Response>>>,
    not_found: impl Fn(&E) -> bool,
) -> Result<Option<T>, StepError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    crate::ratelimit::acquire(op.call).await;
    match call.await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.as_service_error().is_some_and(&not_found) => Ok(None),
        Err(e) => Err(op.failed(e)),
    }
}

/// Like [`find`], for operations whose error model has no typed not-found variant although
/// the service (or an emulator) answers with that code: matched by the code string. Each use
/// says which.
pub async fn find_by_code<T, E>(
    op: Op<'_>,
    call: impl Future<Output = Result<T, SdkError<E, Response>>>,
    code: &str,
) -> Result<Option<T>, StepError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    crate::ratelimit::acquire(op.call).await;
    match call.await {
        Ok(v) => Ok(Some(v)),
        Err(e) if crate::aws::code_of(&e) == Some(code) => Ok(None),
        Err(e) => Err(op.failed(e)),
    }
}

/// Reads every page of a paginated call (its SDK paginator), each request after the
/// operation's rate limit: the paginator sends a page's request only when asked for the page.
/// `each` sees the pages in order. False when AWS answers with the typed not-found error
/// `not_found` recognises (what it lists is gone), after the pages before it.
pub async fn each_page<T, E>(
    op: Op<'_>,
    mut pages: PaginationStream<Result<T, SdkError<E, Response>>>,
    not_found: impl Fn(&E) -> bool,
    mut each: impl FnMut(T),
) -> Result<bool, StepError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    loop {
        // The last ask makes no request (the paginator knows there is no next page), but it
        // cannot be told apart beforehand: one rate token per listing is the cost.
        crate::ratelimit::acquire(op.call).await;
        match pages.next().await {
            None => return Ok(true),
            Some(Ok(page)) => each(page),
            Some(Err(e)) if e.as_service_error().is_some_and(&not_found) => return Ok(false),
            Some(Err(e)) => return Err(op.failed(e)),
        }
    }
}

/// Sends a create call after its intent was recorded. If the service answers with its typed
/// already-exists error (`exists`), the likeliest cause is our own earlier attempt: its answer
/// was lost (a 5xx or a timeout after the write) and the SDK retried. That is
/// [`StepError::ExistsAfterCreate`]: the intent stays, and the engine reads again, which
/// adopts the resource. (Another writer creating the same suffixed name in that instant is far
/// less likely, and the state lock rules out a second iotreg run on this deployment.)
pub async fn create<T, E>(
    op: Op<'_>,
    call: impl Future<Output = Result<T, SdkError<E, Response>>>,
    exists: impl Fn(&E) -> bool,
) -> Result<T, StepError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    crate::ratelimit::acquire(op.call).await;
    match call.await {
        Ok(v) => Ok(v),
        Err(e) if e.as_service_error().is_some_and(&exists) => Err(StepError::ExistsAfterCreate {
            kind: op.kind.to_string(),
            name: op.name.to_string(),
        }),
        Err(e) => Err(op.failed(e)),
    }
}
