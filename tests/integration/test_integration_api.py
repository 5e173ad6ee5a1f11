from tests.integration.conftest import Suite, create


async def test_probe1(suite: Suite) -> None:
    await create(suite)


async def test_probe2(suite: Suite) -> None:
    await create(suite)


async def test_probe3(suite: Suite) -> None:
    await create(suite)
