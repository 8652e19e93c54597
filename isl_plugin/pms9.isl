// ==========================================================================================
//  pms9.isl - loyalty edge gateway plugin for MICROS RES 3700 / Simphony (SIM/ISL)
//
//  The register's half of the conversation with the store's loyalty edge gateway: identify a
//  member (the member and the balance go on the check as check information lines), apply a
//  coupon's discount, release a coupon (by key, when its discount line is voided, or when the
//  check is cancelled), record lottery consent, and post the check at the final tender with
//  the visit's points and tickets printed on the receipt printer.
//  Protocol: docs/protocol.md. Install: isl_plugin/INSTALL.md. The evidence for every
//  construct below: docs/isl.md section 1.5. Tested by tests/test_isl_*.py, which run this file,
//  unmodified, with isl_plugin/islrun against a real gateway.
//
//  Touchscreen keys: SIM inquiry keys of this interface. On RES the key names the interface
//  number and the inquiry number; on Simphony its arguments are "<application name>:<inquiry>",
//  for example LOYAL:1 for an extension application named LOYAL (INSTALL.md).
//    Inq 1  Loyalty member     scan or type the member's card / QR         -> IDENT
//    Inq 2  Loyalty coupon     scan or type a coupon code                  -> COUPON
//    Inq 3  Release coupon     release the last loyalty coupon on the check -> COUPON_VOID
//    Inq 4  Lottery consent    the member joins (1) or leaves (0) the lottery -> CONSENT
//    Inq 5  Loyalty status     is the gateway there? (shows the settings too)  -> PING
//  Events the POS fires by itself:
//    Begin_Check    a member identified before the check was begun: the check information lines
//    Dtl_Changed    a loyalty coupon whose discount line was voided      -> COUPON_VOID
//    Trans_Cncl     the check is cancelled: every coupon it held          -> COUPON_VOID
//    Final_Tender   posts the check; prints the points and tickets        -> POST
//
//  Every request is one TxMsg with one argument per field. The keys wait with WaitForRxMsg:
//  the reply runs "Event RxMsg : <reply name>", or "Event RxMsg : _TIMEOUT" when the gateway
//  did not answer within the interface's timeout. The releases of Dtl_Changed and Trans_Cncl
//  wait with GetRxMsg and read @RxMsg. Then the cashier sees a short message and the sale goes
//  on: nothing here ever cancels a tender.
//
//  Evidence tags (the scripts are listed in docs/isl.md, section 1.5):
//    [OBS x] the construct is seen in real, public ISL script x
//    [INF]   inferred: not seen in a real script; verify on the target system (INSTALL.md)
// ==========================================================================================

RetainGlobalVar          // [OBS Rewards] globals live between events: the member stays
UseISLTimeOuts           // [OBS Rewards, Labels] in every real SIM-link script
ContinueOnCancel         // [OBS Rewards] Clear at an Input returns here; events test @INPUTSTATUS

// ---------------------------------- SETTINGS ---------------------------------------------
// Global initial values at the top: [OBS Rewards, Labels].

// The interface number is the N of this file's name, pms<N>.isl: rename the file to change
// it (INSTALL.md). The reply timeout is the interface's Timeout field, not a script setting.
// Both are repeated here only so the status key (Inq 5) shows what store IT installed.
var gInterface          : N3  = 9
var gTimeoutS           : N3  = 5
var gScriptVersion      : A10 = "1.1.0"

// LoadKybdMacro key types. [OBS QR promotion] menu item 3 and discount 5; another script
// applies discounts with type 6: check yours (INSTALL.md).
var gKeyMenuItem        : N3  = 3
var gKeyDiscount        : N3  = 5

// Discount objects, used when the gateway's COUPON_OK names none (the gateway's wins).
var gDscAmountObj       : N9  = 101   // open amount discount: the amount is typed
var gDscPercentObj      : N9  = 103   // open percent discount: the percent is typed
var gDscItemObj         : N9  = 102   // 100 % item discount on the last item

// Marker menu item (price 0, reference entry required) that keeps a coupon's reference in the
// check, so it survives a service total and a pick-up. [OBS QR promotion] the same pattern.
var gCouponMarkerObj    : N9  = 9001

// Post checks with neither a member nor a coupon (1) or not (0: no wait at those tenders).
var gPostAnonymous      : N1  = 0

// Check information lines are cut to this many characters. [OBS Rewards, pms2] cut to 24.
var gInfoWidth          : N3  = 24

// What the final tender prints goes to the receipt printer (0) or, for workstations that print
// receipts on their guest check printer, to that one (1). Its first line ("" for none):
var gPrintOnCheckPrinter : N1 = 0
var gPrintTitle         : A24 = "LOYALTY"

// What the cashier reads. Keep them short: the POS shows about 32 characters a line.
var gMsgTitle           : A32 = "Loyalty"
var gMsgCard            : A40 = "Scan or type loyalty card / QR"
var gMsgCoupon          : A40 = "Scan or type coupon code"
var gMsgConsent         : A40 = "Lottery: customer agrees? 1=Yes 0=No"
var gMsgConsentBad      : A40 = "Answer 1 (yes) or 0 (no)"
var gMsgJoined          : A40 = "Lottery: member joined"
var gMsgLeft            : A40 = "Lottery: member left, earns points"
var gMsgOffline         : A40 = "Loyalty offline - go on"
var gMsgNoPoints        : A40 = "Points not recorded"
var gMsgNoCoupon        : A40 = "Coupon not applied"
var gMsgNoMember        : A40 = "Identify the member first"
var gMsgNoItems         : A40 = "Ring up the items first"
var gMsgNoCouponOnCheck : A40 = "No loyalty coupon on this check"
var gMsgReleased        : A40 = "Coupon released"
var gMsgVoidLines       : A40 = "Now void its discount line"
var gMsgReleasing       : A40 = "Releasing loyalty coupon"
var gMsgHeld            : A40 = "Coupon held until it expires"
var gMsgBadCoupon       : A40 = "Coupon kind not known here"
var gMsgInfoMember      : A24 = "Member"
var gMsgInfoBalance     : A24 = "Points balance"
var gMsgRcptOffline     : A24 = "Points not recorded"
// -------------------------------- END OF SETTINGS ----------------------------------------

// State of this workstation (one copy of the script runs per workstation)
var gMember             : A64    // member ref IDENT_OK returned, for the check gMemberCheck
var gMemberName         : A40
var gMemberBalance      : A12    // the points balance IDENT_OK returned
var gMemberCheck        : N9     // @CKNUM at IDENT (0: identified before the check was begun)
var gInfoCheck          : N9     // the check holding this script's information lines (0: none)
var gPending            : A12    // the request waiting for its reply: IDENT, COUPON, POST ...
var gVoidRef            : A64    // the coupon ref a COUPON_VOID is releasing
var gConsent            : A1     // Y or N, as sent in CONSENT
var gReleased[20]       : A64    // coupon refs released on check gReleasedCheck
var gReleasedN          : N3
var gReleasedCheck      : N9
var gF[16]              : A256   // the last reply's data fields (see ReadReply)


// ==========================================================================================
//  Inquiry keys
// ==========================================================================================

Event Inq : 1                                   // [OBS Rewards, QR promotion] inquiry event
    var token : A512
    Input token, gMsgCard                       // [OBS QR promotion] a scanner types into Input
    token = Trim(token)                         // [OBS QR promotion] Trim
    If @INPUTSTATUS = 0 Or Len(token) = 0       // [OBS QR promotion] @INPUTSTATUS; Len
        ExitCancel                              // [OBS Rewards]
    EndIf
    gPending = "IDENT"
    TxMsg "IDENT", @WSID, @RVC, @CKNUM, token   // [OBS Labels] TxMsg with several arguments
    WaitForRxMsg                                // [OBS Labels] the reply runs Event RxMsg : name
EndEvent


Event Inq : 2
    var code : A128
    var member : A64
    var subtotal : $12
    If @CKNUM = 0 Or @NUMDTLT = 0
        InfoMessage gMsgTitle, gMsgNoItems       // [OBS Rewards] InfoMessage "title", "text"
        ExitCancel
    EndIf
    Input code, gMsgCoupon
    code = Trim(code)
    If @INPUTSTATUS = 0 Or Len(code) = 0
        ExitCancel
    EndIf
    Call ItemsSubtotal(subtotal)
    Call CurrentMember(member)
    gPending = "COUPON"
    TxMsg "COUPON", @WSID, @CKNUM, member, code, subtotal
    WaitForRxMsg
EndEvent


// Releases the last loyalty coupon on the check; the cashier then voids its lines.
Event Inq : 3
    var cref : A64
    Call LastCouponRef(cref)
    If Len(cref) = 0
        InfoMessage gMsgTitle, gMsgNoCouponOnCheck
        ExitCancel
    EndIf
    gVoidRef = cref
    gPending = "COUPON_VOID"
    TxMsg "COUPON_VOID", @WSID, @CKNUM, cref
    WaitForRxMsg
EndEvent


Event Inq : 4
    var member : A64
    var answer : A8
    Call CurrentMember(member)
    If Len(member) = 0
        InfoMessage gMsgTitle, gMsgNoMember
        ExitCancel
    EndIf
    Input answer, gMsgConsent
    answer = Trim(answer)
    If @INPUTSTATUS = 0 Or Len(answer) = 0
        ExitCancel
    EndIf
    If answer = "1" Or answer = "Y" Or answer = "y"
        gConsent = "Y"
    ElseIf answer = "0" Or answer = "N" Or answer = "n"   // [OBS Rewards] ElseIf
        gConsent = "N"
    Else
        InfoMessage gMsgTitle, gMsgConsentBad
        ExitCancel
    EndIf
    gPending = "CONSENT"
    TxMsg "CONSENT", @WSID, member, "LOTTERY", gConsent
    WaitForRxMsg
EndEvent


Event Inq : 5
    gPending = "PING"
    TxMsg "PING"
    WaitForRxMsg
EndEvent


// ==========================================================================================
//  Events the POS fires
// ==========================================================================================

// A member identified before the check was begun belongs to this check: its information lines.
Event Begin_Check                               // [OBS Rewards] event begin_check
    var member : A64
    Call CurrentMember(member)
    If Len(member) > 0 And gInfoCheck <> @CKNUM
        Call SaveInfoLines
    EndIf
EndEvent


// The cashier voided a line: a loyalty coupon whose discount line (or marker) is now void is
// released at once, so another check can use it. [OBS QR promotion] Dtl_Changed releases the
// vouchers whose marker lines left the check.
Event Dtl_Changed                               // [OBS QR promotion] event dtl_changed
    Call ReleaseCoupons(0)
EndEvent


// The check is cancelled: release every coupon it held, forget the member. [OBS Rewards,
// Payments, QR promotion] trans_cncl releases what the check held at the server.
Event Trans_Cncl                                // [OBS Rewards, QR promotion] event trans_cncl
    Call ReleaseCoupons(1)
    Call ClearInfoLines
    Call ForgetCheck
EndEvent


Event Final_Tender                              // [OBS Rewards, Labels] event final_tender
    var member : A64
    var items : A5000                           // [OBS Labels] A5000 request strings
    var refs : A1000
    var subtotal : $12
    var total : $12
    var bizdate : A8
    Call CurrentMember(member)
    Call BuildPost(items, refs, subtotal, total)
    Call ClearInfoLines                         // [OBS Rewards] cleared at final_tender
    If Len(member) > 0 Or Len(refs) > 0 Or gPostAnonymous = 1
        Call BusinessDate(bizdate)
        gPending = "POST"
        TxMsg "POST", @WSID, @RVC, @CKNUM, bizdate, member, subtotal, total, items, refs
        WaitForRxMsg
    Else
        Call ForgetCheck
    EndIf
EndEvent


// ==========================================================================================
//  Replies from the gateway: Event RxMsg : <first field of the reply>   [OBS Labels]
// ==========================================================================================

// member ref, display name, tier, points balance, earn mode, message
Event RxMsg : IDENT_OK
    var text : A80
    Call ReadReply("IDENT_OK")
    gMember = gF[1]
    gMemberName = gF[2]
    gMemberBalance = gF[4]
    gMemberCheck = @CKNUM
    If @CKNUM <> 0                              // no check yet: Begin_Check writes the lines
        Call SaveInfoLines
    EndIf
    If gF[5] = "LOTTERY"
        Format text As gF[6], " - lottery"      // [OBS Rewards] Format ... As
    Else
        Format text As gF[6], " - ", gF[4], " pts"
    EndIf
    InfoMessage gMsgTitle, text
    gPending = ""
EndEvent

// reason, message
Event RxMsg : IDENT_FAIL
    Call ReadReply("IDENT_FAIL")
    InfoMessage gMsgTitle, gF[2]
    gPending = ""
EndEvent

// coupon ref, kind, discount object, value, item object, message
Event RxMsg : COUPON_OK
    var obj : N9
    var applied : N1
    Call ReadReply("COUPON_OK")
    obj = gF[3]
    applied = 1
    If gF[2] = "AMOUNT"
        If obj = 0
            obj = gDscAmountObj
        EndIf
        // [OBS Delivery] open discount: Key(discount, obj), MakeKeys(amount), @KEY_ENTER
        LoadKybdMacro Key(gKeyDiscount, obj), MakeKeys(gF[4]), @KEY_ENTER
    ElseIf gF[2] = "PERCENT"
        If obj = 0
            obj = gDscPercentObj
        EndIf
        LoadKybdMacro Key(gKeyDiscount, obj), MakeKeys(gF[4]), @KEY_ENTER
    ElseIf gF[2] = "ITEM" And Len(gF[5]) > 0
        If obj = 0
            obj = gDscItemObj
        EndIf
        // the free item, then the item discount that takes it off; [OBS QR promotion, Rewards]
        // every menu item key and every discount key followed by @KEY_ENTER
        LoadKybdMacro Key(gKeyMenuItem, gF[5]), @KEY_ENTER, Key(gKeyDiscount, obj), @KEY_ENTER
    Else
        applied = 0
        InfoMessage gMsgTitle, gMsgBadCoupon
    EndIf
    If applied = 1
        // marker item + reference entry holding the coupon ref [OBS QR promotion, Rewards]
        LoadKybdMacro Key(gKeyMenuItem, gCouponMarkerObj), MakeKeys(gF[1]), @KEY_ENTER
        InfoMessage gMsgTitle, gF[6]
    EndIf
    gPending = ""
EndEvent

// reason, message
Event RxMsg : COUPON_FAIL
    Call ReadReply("COUPON_FAIL")
    InfoMessage gMsgTitle, gF[2]
    gPending = ""
EndEvent

Event RxMsg : COUPON_VOID_OK
    Call NoteReleased(gVoidRef)
    InfoMessage gMsgReleased, gMsgVoidLines
    gPending = ""
EndEvent

Event RxMsg : CONSENT_OK
    If gConsent = "Y"
        InfoMessage gMsgTitle, gMsgJoined
    Else
        InfoMessage gMsgTitle, gMsgLeft
    EndIf
    gPending = ""
EndEvent

// reason, message
Event RxMsg : CONSENT_FAIL
    Call ReadReply("CONSENT_FAIL")
    InfoMessage gMsgTitle, gF[2]
    gPending = ""
EndEvent

// points earned, points balance, tickets earned, wallet points, receipt lines (up to 8)
Event RxMsg : POST_OK
    var i : N3
    Call ReadReply("POST_OK")
    If Len(gF[5]) > 0
        Call StartChit
            For i = 5 To 12                     // [OBS Tips, Fiscal] PrintLine in a loop
                If Len(gF[i]) > 0
                    PrintLine gF[i]
                EndIf
            EndFor
        EndPrint                                // [OBS Tips, Fiscal]
    EndIf
    Call ForgetCheck
EndEvent

// reason, message
Event RxMsg : POST_FAIL
    Call ReadReply("POST_FAIL")
    Call PrintNotRecorded
    InfoMessage gMsgTitle, gF[2]
    Call ForgetCheck
EndEvent

// reason, message: a request the gateway could not read, or a coupon it cannot release
Event RxMsg : ERROR
    Call ReadReply("ERROR")
    InfoMessage gMsgTitle, gF[2]
    If gPending = "POST"
        Call PrintNotRecorded
        Call ForgetCheck
    EndIf
    gPending = ""
EndEvent

// state (STANDALONE, ONLINE, OFFLINE), version
Event RxMsg : PONG
    var mine : A40
    var theirs : A40
    Call ReadReply("PONG")
    Format mine As "pms", gInterface, " v", gScriptVersion, " timeout ", gTimeoutS, " s"
    Format theirs As "Gateway ", gF[2], " ", gF[1]
    InfoMessage mine, theirs
    gPending = ""
EndEvent

// No reply within the interface's timeout (or no connection): tell the cashier, go on.
Event RxMsg : _TIMEOUT                          // [OBS Labels] _TIMEOUT
    If gPending = "POST"
        Call PrintNotRecorded
        InfoMessage gMsgOffline, gMsgNoPoints
        Call ForgetCheck
    ElseIf gPending = "COUPON"
        InfoMessage gMsgOffline, gMsgNoCoupon
    Else
        InfoMessage gMsgTitle, gMsgOffline
    EndIf
    gPending = ""
EndEvent


// ==========================================================================================
//  Subroutines
// ==========================================================================================

// Reads the reply's data fields into gF[1..]. A reply carried as one |-separated field is read
// the way the public scripts read theirs: [OBS Rewards, Payments, pms2 ...] Split @RxMsg, "|".
// The gateway's default style sends one FS-separated field per value (docs/protocol.md); no
// public script reads such a reply, so those fields are read with the RxMsg statement [INF]
// (docs/isl.md, "Reply style"), whether its first variable gets the reply's name or not.
Sub ReadReply(Var name : A20)                   // [OBS Rewards] Sub with a Var parameter
    var i : N3
    var head : A20
    ClearArray gF                               // [OBS Rewards] ClearArray
    Split @RxMsg, "|", head, gF[]               // [OBS TAS] Split into an array
    If Len(gF[1]) = 0                           // no "|": the fields travel one per FS field
        RxMsg gF[1], gF[2], gF[3], gF[4], gF[5], gF[6], gF[7], gF[8], gF[9], gF[10], \
              gF[11], gF[12], gF[13], gF[14], gF[15], gF[16]
        If gF[1] = name
            For i = 1 To 15
                gF[i] = gF[i + 1]
            EndFor
            gF[16] = ""
        EndIf
    EndIf
EndSub

// The member identified for this check, or "". A member identified before the check was
// begun (@CKNUM 0) belongs to the next check; one left from another check is forgotten.
Sub CurrentMember(Ref member)                   // [OBS QR promotion] Ref parameter
    member = ""
    If Len(gMember) > 0
        If gMemberCheck = 0
            gMemberCheck = @CKNUM
        EndIf
        If gMemberCheck = @CKNUM
            member = gMember
        ElseIf @CKNUM <> 0
            Call ForgetCheck
        EndIf
    EndIf
EndSub

Sub ForgetCheck
    gMember = ""
    gMemberName = ""
    gMemberBalance = ""
    gMemberCheck = 0
    gInfoCheck = 0
    gReleasedN = 0
    gPending = ""
EndSub

// The member and the balance as check information lines, each cut to gInfoWidth characters.
// [OBS Rewards] ClearChkInfo then SaveChkInfo when the card is read; Mid(text, 1, 24).
Sub SaveInfoLines
    var line : A64
    ClearChkInfo
    Format line As gMsgInfoMember, " ", gMemberName
    SaveChkInfo Mid(line, 1, gInfoWidth)        // [OBS pms2] SaveChkInfo Mid(...)
    Format line As gMsgInfoBalance, " ", gMemberBalance
    SaveChkInfo Mid(line, 1, gInfoWidth)
    gInfoCheck = @CKNUM
EndSub

// Clears this script's information lines from the check it wrote them on.
Sub ClearInfoLines
    If gInfoCheck <> 0 And gInfoCheck = @CKNUM
        ClearChkInfo                            // [OBS Rewards] ClearChkInfo
    EndIf
    gInfoCheck = 0
EndSub

// Starts the print job of the final tender and prints its title; the caller prints the lines
// and ends it. [OBS Print_Seat] a print job begun in one routine and ended in another.
Sub StartChit
    If gPrintOnCheckPrinter = 1
        StartPrint @CHK                         // [OBS Tips] the guest check printer
    Else
        StartPrint @RCPT                        // [OBS Fiscal] the receipt printer
    EndIf
    If Len(gPrintTitle) > 0
        PrintLine gPrintTitle                   // [OBS Tips, Fiscal] PrintLine
    EndIf
EndSub

// The printer says the points were not recorded (no reply, or the gateway refused).
Sub PrintNotRecorded
    Call StartChit
        PrintLine gMsgRcptOffline
    EndPrint
EndSub

// The menu items' total, before discounts, without the coupon markers.
Sub ItemsSubtotal(Ref subtotal)
    var i : N5
    subtotal = 0
    For i = 1 To @NUMDTLT                       // [OBS Labels, Rewards] @NUMDTLT / @DTL_* walk
        If @DTL_TYPE[i] = "M" And @DTL_IS_VOID[i] = 0 And @DTL_OBJECT[i] <> gCouponMarkerObj
            subtotal = subtotal + @DTL_TTL[i]
        EndIf
    EndFor
EndSub

// The reference entry right after detail i, if there is one. [OBS QR promotion] the guard
// "i + 1 <= @NUMDTLT", and @DTL_NAME of the R detail as the text typed.
Sub RefAfter(Var i : N5, Ref cref)
    cref = ""
    If i < @NUMDTLT
        If @DTL_TYPE[i + 1] = "R"
            cref = Trim(@DTL_NAME[i + 1])
        EndIf
    EndIf
EndSub

// Whether detail i is voided: [OBS Labels] not @DTL_IS_VOID, not Bit(@DTL_STATUS, 5) (void),
// not Bit(@DTL_STATUS, 12) (error correct); [OBS Print_Seat] Bit(@DTL_STATUS[i], 5) = 1.
Sub LineVoid(Var i : N5, Ref gone)
    gone = 0
    If @DTL_IS_VOID[i] <> 0 Or Bit(@DTL_STATUS[i], 5) = 1 Or Bit(@DTL_STATUS[i], 12) = 1
        gone = 1
    EndIf
EndSub

// The coupon of the marker at detail i: its ref, and whether the check still uses it (the
// marker and its discount line, the detail right before it, not void; not released). A
// discount line that is no longer right before its marker is not noticed [INF].
Sub CouponAt(Var i : N5, Ref cref, Ref used)
    var released : N1
    var gone : N1
    var prev : N5
    Call RefAfter(i, cref)
    Call IsReleased(cref, released)
    used = 0
    If Len(cref) > 0 And released = 0
        Call LineVoid(i, gone)
        If gone = 0
            used = 1
            If i > 1                            // [OBS QR promotion] the index guard
                prev = i - 1
                If @DTL_TYPE[prev] = "D"
                    Call LineVoid(prev, gone)
                    If gone = 1
                        used = 0
                    EndIf
                EndIf
            EndIf
        EndIf
    EndIf
EndSub

Sub IsReleased(Var cref : A64, Ref released)
    var k : N3
    released = 0
    If gReleasedCheck = @CKNUM
        For k = 1 To gReleasedN
            If gReleased[k] = cref
                released = 1
            EndIf
        EndFor
    EndIf
EndSub

Sub NoteReleased(Var cref : A64)
    If gReleasedCheck <> @CKNUM
        gReleasedN = 0
        gReleasedCheck = @CKNUM
    EndIf
    If gReleasedN < 20
        gReleasedN = gReleasedN + 1
        gReleased[gReleasedN] = cref
    EndIf
EndSub

// The ref of the last coupon the check still uses.
Sub LastCouponRef(Ref last)
    var i : N5
    var cref : A64
    var used : N1
    last = ""
    For i = 1 To @NUMDTLT
        If @DTL_TYPE[i] = "M" And @DTL_OBJECT[i] = gCouponMarkerObj
            Call CouponAt(i, cref, used)
            If used = 1
                last = cref
            EndIf
        EndIf
    EndFor
EndSub

// Sends COUPON_VOID for the coupons the check holds but no longer uses (all = 0: the marker or
// the discount line was voided), or for every coupon it holds (all = 1: the check is
// cancelled). [OBS Rewards, pms2] TxMsg, GetRxMsg with a prompt, then @RxMsg = "_timeout".
Sub ReleaseCoupons(Var all : N1)
    var i : N5
    var cref : A64
    var used : N1
    var released : N1
    var done : N3
    var failed : N3
    done = 0
    failed = 0
    For i = 1 To @NUMDTLT
        If @DTL_TYPE[i] = "M" And @DTL_OBJECT[i] = gCouponMarkerObj
            Call CouponAt(i, cref, used)
            Call IsReleased(cref, released)
            If Len(cref) > 0 And released = 0 And (used = 0 Or all = 1)
                gVoidRef = cref
                TxMsg "COUPON_VOID", @WSID, @CKNUM, cref
                GetRxMsg gMsgReleasing              // [OBS Rewards] GetRxMsg "prompt"
                If @RxMsg = "_timeout"              // [OBS Rewards, Payments, pms2]
                    failed = failed + 1
                Else                                // COUPON_VOID_OK, or ERROR: nothing held
                    Call NoteReleased(cref)
                    done = done + 1
                EndIf
            EndIf
        EndIf
    EndFor
    If failed > 0
        InfoMessage gMsgOffline, gMsgHeld
    ElseIf done > 0
        InfoMessage gMsgTitle, gMsgReleased
    EndIf
EndSub

// POST's items (qty*object*total joined by ";"), coupon refs (joined by ";"), the items'
// subtotal and the total after the check's discounts. Voided lines are skipped, and so are
// the coupons the check no longer uses.
Sub BuildPost(Ref items, Ref refs, Ref subtotal, Ref total)
    var i : N5
    var n : N5
    var discounts : $12
    var cref : A64
    var used : N1
    items = ""
    refs = ""
    subtotal = 0
    discounts = 0
    n = 0
    For i = 1 To @NUMDTLT
        If @DTL_TYPE[i] = "M" And @DTL_OBJECT[i] = gCouponMarkerObj
            Call CouponAt(i, cref, used)
            If used = 1
                If Len(refs) > 0
                    Format refs As refs, ";", cref
                Else
                    refs = cref
                EndIf
            EndIf
        ElseIf @DTL_TYPE[i] = "D" And @DTL_IS_VOID[i] = 0
            discounts = discounts + @DTL_TTL[i]
        ElseIf @DTL_TYPE[i] = "M" And @DTL_IS_VOID[i] = 0
            If n > 0
                Format items As items, ";"
            EndIf
            Format items As items, @DTL_QTY[i], "*", @DTL_OBJECT[i], "*", @DTL_TTL[i]
            n = n + 1
            subtotal = subtotal + @DTL_TTL[i]
        EndIf
    EndFor
    total = subtotal + discounts
EndSub

// YYYYMMDD. [OBS Labels, QR promotion] @YEAR has two digits (scripts print @YEAR + 2000).
// [INF] the calendar date stands for the business date (RES keeps that in its database).
Sub BusinessDate(Ref bizdate)
    var year : N5
    year = @YEAR
    If year < 100
        year = year + 2000
    EndIf
    Format bizdate As year{04}, @MONTH{02}, @DAY{02}   // [OBS Labels] {04} / {02} specs
EndSub
