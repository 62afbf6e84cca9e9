"""What every function of the stack shares, packaged into each function's zip by the build
(iot_fleet.fleet_function.stage_source): the device registry's layout and statuses (`registry`, which
the stack, the operator tools and the tests import too) and the functions' runtime helpers (`runtime`)."""
