"""Model shipping: the hub serves its signed model registry (``Settings.model_registry``) to edges.

``GET /models`` lists names, versions and the latest of each; ``GET /models/{name}/latest`` names
the version an edge should run; ``GET /models/{name}/{version}/files/{onnx|manifest|signature}``
serves one file as raw bytes (the signature as its 64 raw bytes). The files are served as stored:
the edge verifies the signature and the hash itself (``models.signing.verify_model``), so a
tampered file is refused there, whoever tampered with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import FromPath, JSONBody

from hub.auth import ADMIN, MODEL_READ
from hub.auth.audit import record
from hub.auth.guards import allow
from hub.openapi import error
from hub.modelship.schemas import ModelInfo, ModelList, ModelVersion, RetrainRequest, RetrainResult
from hub.modelship.training import RetrainError, retrain
from models.registry import Registry, RegistryError
from models.signing import ModelVerificationError, load_private_key

__all__ = ["ROUTES", "get_model_file", "latest_model", "list_models", "registry", "retrain_model"]

FileKind = Literal["onnx", "manifest", "signature"]


def registry(state: State) -> Registry:
    return Registry(state.settings.model_registry)


@get("/models", guards=[allow(MODEL_READ)], sync_to_thread=True, summary="Models in the registry: versions and the latest of each")
def list_models(state: State) -> ModelList:
    reg = registry(state)
    out = []
    for name in reg.names():
        try:
            latest: int | None = reg.latest(name)
        except RegistryError:
            latest = None
        out.append(ModelInfo(name=name, versions=reg.versions(name), latest=latest))
    return ModelList(models=out)


@get("/models/{name:str}/latest", guards=[allow(MODEL_READ)], sync_to_thread=True, summary="The version of a model edges should run",
     responses={404: error("no such model, or none of its versions is signed and whole")})
def latest_model(name: FromPath[str], state: State) -> ModelVersion:
    try:
        return ModelVersion(name=name, version=registry(state).latest(name))
    except RegistryError as exc:
        raise NotFoundException(str(exc)) from exc


@dataclass
class _ModelFileOperation(Operation):
    """The file is bytes as stored: JSON for the manifest, octet-stream for the others."""

    def __post_init__(self) -> None:
        self.responses = {**(self.responses or {}), "200": OpenAPIResponse(
            description="the file as stored: the ONNX graph or the signature's 64 raw bytes (octet-stream), or "
                        "the manifest (JSON)",
            content={"application/octet-stream": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING,
                                                                                 format="binary")),
                     "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))})}


@get("/models/{name:str}/{version:int}/files/{kind:str}", guards=[allow(MODEL_READ)], sync_to_thread=True,
     summary="One file of a model version: onnx, manifest or signature (raw bytes)",
     operation_class=_ModelFileOperation, responses={404: error("no such model version, or a file of it is missing")})
def get_model_file(name: FromPath[str], version: FromPath[int], kind: FromPath[FileKind],
                   state: State) -> Response[bytes]:
    try:
        files = registry(state).read_files(name, version)
    except (RegistryError, ModelVerificationError) as exc:  # no such version, or a file missing
        raise NotFoundException(str(exc)) from exc
    body = {"onnx": files.onnx, "manifest": files.manifest, "signature": files.signature}[kind]
    media = "application/json" if kind == "manifest" else "application/octet-stream"
    return Response(body, media_type=media)


@post("/retrain", guards=[allow(ADMIN)], sync_to_thread=True, status_code=200,
      summary="Retrain with experts' verdicts on incidents; publish the next version",
      responses={400: error("bad retraining input, the field named: it does not match this document, names an "
                            "incident the hub does not hold, ends before it starts, or leaves nothing to learn "
                            "from the data held"),
                 503: error("the hub cannot sign models: no signing key ($SENTINEL_MODEL_SIGNING_KEY)")})
def retrain_model(data: JSONBody[RetrainRequest], request: Request, state: State) -> RetrainResult:
    """``method``: ``feedback`` retrains the risk classifier on the verdicts; ``from_database``
    retrains the unsupervised model on stored readings, keeping windows judged anomalous out.
    Signs with ``$SENTINEL_MODEL_SIGNING_KEY``; answers 400 naming the field on bad input."""
    try:
        key = load_private_key()
    except ValueError as exc:
        raise HTTPException(status_code=503, detail=f"the hub cannot sign models: {exc}") from exc
    try:
        result = retrain(state.storage, registry(state), key, data)
    except RetrainError as exc:
        raise ValidationException(detail="bad retraining input", extra=[
            {"key": exc.field, "source": "body", "message": str(exc).removeprefix(f"{exc.field}: ")}]) from exc
    record(request, "model.publish", result.model, method=data.method, version=result.model_version)
    return result


ROUTES = [list_models, latest_model, get_model_file, retrain_model]
