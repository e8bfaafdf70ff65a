"""The four levels of the DICOM hierarchy as the REST API names them."""

from enum import IntEnum


class Level(IntEnum):
    PATIENT = 0
    STUDY = 1
    SERIES = 2
    INSTANCE = 3

    @property
    def title(self) -> str:
        """'Patient', 'Study', ... as in JSON answers ("Type", "ResourceType")."""
        return self.name.capitalize()

    @property
    def route(self) -> str:
        """'patients', 'studies', ... as in URIs."""
        return _ROUTES[self]

    @property
    def child(self) -> "Level | None":
        return Level(self + 1) if self < Level.INSTANCE else None

    @property
    def parent(self) -> "Level | None":
        return Level(self - 1) if self > Level.PATIENT else None

    @classmethod
    def parse(cls, text: str) -> "Level":
        """Accept 'Study', 'study', 'STUDY' or the route name 'studies'."""
        key = text.strip().lower()
        for level in cls:
            if key in (level.name.lower(), level.route):
                return level
        raise ValueError(f"Unknown resource level: {text}")


_ROUTES = {
    Level.PATIENT: "patients",
    Level.STUDY: "studies",
    Level.SERIES: "series",
    Level.INSTANCE: "instances",
}
