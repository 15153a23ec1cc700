"""Pure music helpers: the bar rule (:mod:`.meter`), note arrays, keys, instruments, harmony
and moods. Nothing here loads a model; every other layer of melodia may import from here."""
