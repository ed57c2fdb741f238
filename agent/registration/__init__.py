"""Registration under the CUP rules of 2017 onwards (DESIGN.md section 17): the terminal hardware
serial number (TUSN) in field 59 usage A2, the location in A5, and whose refusal it is when a host
refuses a request of a terminal that signed in."""
