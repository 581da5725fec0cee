//! The gRPC face of the node's operations. Every call is short: it validates, records and
//! returns; the work runs in [`Operations`].

use std::time::Duration;

use proto::atelet::{
    CancelOperationRequest, GetOperationRequest, ListOperationsRequest, ListOperationsResponse,
    Operation, PrepareGoldenRequest, PullImageRequest, RestoreActorRequest, SuspendActorRequest,
    WaitOperationRequest, atelet_server::Atelet,
};
use tonic::{Request, Response, Status};

use crate::operations::{MAX_WAIT, Operations, OperationsError};

/// Serves atelet's API over the node's operations.
#[derive(Clone)]
pub struct Service {
    operations: Operations,
}

impl Service {
    /// Wraps the node's operations.
    pub fn new(operations: Operations) -> Service {
        Service { operations }
    }
}

/// The one mapping from operation errors to gRPC status codes.
impl From<OperationsError> for Status {
    fn from(error: OperationsError) -> Status {
        match error {
            OperationsError::NotFound(_) => Status::not_found(error.to_string()),
            OperationsError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
            OperationsError::Record { .. } => Status::unavailable(error.to_string()),
        }
    }
}

#[tonic::async_trait]
impl Atelet for Service {
    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<Operation>, Status> {
        Ok(Response::new(self.operations.start_pull(request.into_inner()).await?))
    }

    async fn prepare_golden(
        &self,
        _: Request<PrepareGoldenRequest>,
    ) -> Result<Response<Operation>, Status> {
        // TODO: boot, checkpoint and upload arrive with the golden-snapshot work; until then
        // callers prepare a template's root filesystem with PullImage.
        Err(Status::unimplemented(
            "PrepareGolden is not available on this atelet yet; use PullImage",
        ))
    }

    async fn restore_actor(
        &self,
        _: Request<RestoreActorRequest>,
    ) -> Result<Response<Operation>, Status> {
        Err(Status::unimplemented("RestoreActor is not available on this atelet yet"))
    }

    async fn suspend_actor(
        &self,
        _: Request<SuspendActorRequest>,
    ) -> Result<Response<Operation>, Status> {
        Err(Status::unimplemented("SuspendActor is not available on this atelet yet"))
    }

    async fn get_operation(
        &self,
        request: Request<GetOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        Ok(Response::new(self.operations.get(&request.into_inner().name)?))
    }

    async fn wait_operation(
        &self,
        request: Request<WaitOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        let request = request.into_inner();
        let timeout = request.timeout.and_then(|t| Duration::try_from(t).ok()).unwrap_or(MAX_WAIT);
        Ok(Response::new(self.operations.wait(&request.name, timeout).await?))
    }

    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        let request = request.into_inner();
        let all = self.operations.list(request.unfinished_only);
        let page_size = match request.page_size {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse().map_err(|_| {
                Status::invalid_argument("page_token: pass the value a previous call returned")
            })?
        };
        let end = (start + page_size).min(all.len());
        let next_page_token = if end < all.len() { end.to_string() } else { String::new() };
        let operations = all.get(start..end).map(<[Operation]>::to_vec).unwrap_or_default();
        Ok(Response::new(ListOperationsResponse { operations, next_page_token }))
    }

    async fn cancel_operation(
        &self,
        request: Request<CancelOperationRequest>,
    ) -> Result<Response<Operation>, Status> {
        Ok(Response::new(self.operations.cancel(&request.into_inner().name).await?))
    }
}
