"""ORM models. Logger: `app.models`."""

from app.models.base import Base
from app.models.entities import AssetClass, AssetPool

__all__ = ["AssetClass", "AssetPool", "Base"]
